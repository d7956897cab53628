"""The HTTP API (``xmodal.serve``) on a small real index: every endpoint and its error paths.

The index is built by ``build_index`` with the tiny colour dual encoder of ``serve_toys``
(colour names <-> mean colours of coloured squares), so searches have known answers.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip(
    "fastapi", reason="the serve extra is not installed: pip install 'xmodal[serve]'"
)
pytest.importorskip("multipart", reason="python-multipart is missing: pip install 'xmodal[serve]'")
pytest.importorskip("prometheus_client", reason="prometheus-client is missing")

from fastapi.testclient import TestClient
from serve_toys import COLOURS, TOKEN, auth, build_toy_index, png
from typer.testing import CliRunner

from xmodal.index import Snapshot
from xmodal.serve import Limits, create_app


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_index(tmp_path_factory.mktemp("serve"))


@pytest.fixture()
def writable(tmp_path: Path) -> Path:
    """A fresh index per test, for tests that write."""
    return build_toy_index(tmp_path)


@pytest.fixture(scope="module")
def client(index: Path) -> Iterator[TestClient]:
    with TestClient(create_app(index)) as c:
        yield c


# --- search ---------------------------------------------------------------------------------
def test_health_and_openapi(client: TestClient) -> None:
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["items"] == 5 and h["texts"] == 10 and h["read_only"]
    assert h["dim"] == 6 and h["bits"] == 8 and h["model"] == "dual"
    assert h["limits"]["max_k"] == 100 and h["limits"]["max_upload_bytes"] == 10 * 2**20
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/search/text", "/search/image", "/items", "/items/{item_id}", "/health"):
        assert path in paths, path
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("mode", ["float", "hamming", "two-stage"])
def test_text_to_image(client: TestClient, mode: str) -> None:
    r = client.post("/search/text", json={"query": "a red thing", "k": 3, "mode": mode})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == mode and body["target"] == "image" and body["k"] == 3
    assert body["version"] == 1 and body["took_ms"] >= 0
    res = body["results"]
    assert [x["rank"] for x in res] == [1, 2, 3]
    if mode != "hamming":  # 8-bit codes tie; the float score is exact
        assert res[0]["id"] == "images/red.png"
        assert res[0]["score"] == pytest.approx(1.0, abs=0.02)
    assert res[0]["modality"] == "image" and res[0]["captions"][0].startswith("a ")
    assert res[0]["image_url"] == f"/items/{res[0]['id']}/image"
    assert res[0]["thumbnail_url"].startswith(res[0]["image_url"] + "?size=")
    assert "image" not in res[0]  # no server paths in responses
    assert (mode == "float") == (res[0]["distance"] is None)
    scores = [x["score"] for x in res]
    assert scores == sorted(scores, reverse=True)


def test_text_to_text_and_labels(client: TestClient) -> None:
    res = client.post("/search/text", json={"query": "blue", "k": 2, "target": "text"}).json()
    assert [x["caption"] for x in res["results"]] == ["a blue square", "something blue"] or [
        x["caption"] for x in res["results"]
    ] == ["something blue", "a blue square"]
    assert {x["id"] for x in res["results"]} == {"images/blue.png"}
    cool = client.post("/search/text", json={"query": "red", "k": 5, "labels": ["cool"]}).json()
    assert {x["id"] for x in cool["results"]} == {"images/green.png", "images/blue.png"}
    none = client.post("/search/text", json={"query": "red", "labels": ["no-such-label"]}).json()
    assert none["results"] == []


def test_image_search_by_upload_and_by_id(client: TestClient) -> None:
    r = client.post("/search/image", files={"file": ("q.png", png((235, 15, 25)), "image/png")},
                    data={"k": "2"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["id"] == "images/red.png"
    r = client.post("/search/image", files={"file": ("q.png", png((20, 30, 210)), "image/png")},
                    data={"target": "text", "k": "2", "mode": "two-stage"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert {x["id"] for x in r.json()["results"]} == {"images/blue.png"}
    assert all(x["modality"] == "text" and x["caption"] for x in r.json()["results"])
    # "search images like this one": by id, with the stored vector
    r = client.post("/search/image", data={"id": "images/yellow.png", "k": "3"})
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    assert top["id"] == "images/yellow.png" and top["score"] == pytest.approx(1.0, abs=1e-5)
    r = client.post("/search/image", data={"id": "images/green.png", "labels": ["warm"]})
    assert {x["id"] for x in r.json()["results"]} <= {
        "images/red.png", "images/yellow.png", "images/orange.png"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"query": "red", "k": 0}, 422, "k"),
        ({"query": "red", "k": 101}, 422, "k"),
        ({"query": "red", "mode": "cosine"}, 422, "mode"),
        ({"query": "red", "target": "audio"}, 422, "target"),
        ({"query": ""}, 422, "query"),
        ({"query": "   "}, 422, "blank"),
        ({"query": "x" * 1001}, 422, "query"),
        ({"query": "red", "labels": []}, 422, "labels"),
        ({"query": "red", "labels": ["x" * 201]}, 422, "labels"),
        ({"query": "red", "candidates": 0}, 422, "candidates"),
        ({"query": "red", "shoe": 1}, 422, "shoe"),
        ({"k": 3}, 422, "query"),
        ({"query": 5}, 422, "query"),
    ],
)
def test_text_search_errors_name_the_problem(client: TestClient, body, status, words) -> None:
    r = client.post("/search/text", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_malformed_bodies(client: TestClient) -> None:
    r = client.post(
        "/search/text", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    r = client.post("/search/text", content=b'{"query": "\\ud800"}',
                    headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 422 and "query" in r.json()["detail"]
    r = client.post("/search/text", content=b"", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert client.get("/search/text").status_code == 405
    assert client.get("/no/such/route").status_code == 404


def test_image_search_errors(client: TestClient) -> None:
    def post(**kw):
        return client.post("/search/image", **kw)

    r = post(data={"k": "3"})
    assert r.status_code == 400 and "file" in r.json()["detail"] and "id" in r.json()["detail"]
    r = post(files={"file": ("q.png", png(), "image/png")}, data={"id": "images/red.png"})
    assert r.status_code == 400
    r = post(files={"file": ("q.txt", b"hello, not an image", "text/plain")})
    assert r.status_code == 415 and "not a readable image" in r.json()["detail"]
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        noisy, format="PNG"
    )
    r = post(files={"file": ("q.png", noisy.getvalue()[:2000], "image/png")})  # cut short
    assert r.status_code == 400 and "truncated" in r.json()["detail"]
    r = post(files={"file": ("q.png", b"", "image/png")})
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    r = post(data={"id": "images/none.png"})
    assert r.status_code == 404 and "images/none.png" in r.json()["detail"]
    r = post(data={"id": "images/red.png", "k": "1000"})
    assert r.status_code == 422 and "k" in r.json()["detail"]
    r = post(data={"id": "images/red.png", "mode": "bogus"})
    assert r.status_code == 422 and "mode" in r.json()["detail"]


# --- items ----------------------------------------------------------------------------------
def test_items_and_images(client: TestClient, index: Path) -> None:
    item = client.get("/items/images/orange.png").json()
    assert item["id"] == "images/orange.png" and item["labels"] == ["warm"]
    assert item["captions"] == ["a orange square", "something orange"]
    assert item["image_url"] == "/items/images/orange.png/image"
    r = client.get(item["image_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    source = Snapshot.open(index).meta
    path = source.items([source.ids_of_keys(["images/orange.png"])["images/orange.png"]])
    assert r.content == Path(next(iter(path.values())).path).read_bytes()
    assert r.headers["x-content-type-options"] == "nosniff"
    r = client.get(item["image_url"], params={"size": 16})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    thumb = Image.open(io.BytesIO(r.content))
    assert thumb.size == (16, 11) and thumb.getpixel((8, 5)) == COLOURS["orange"]
    assert client.get(item["image_url"], params={"size": 4}).status_code == 422
    assert client.get(item["image_url"], params={"size": 10_000}).status_code == 422
    r = client.get("/items/images/nothing.png")
    assert r.status_code == 404 and "images/nothing.png" in r.json()["detail"]
    assert client.get("/items/images/nothing.png/image").status_code == 404


def test_add_search_and_delete_an_item(writable: Path) -> None:
    with TestClient(create_app(writable, token=TOKEN)) as c:
        assert c.get("/health").json()["read_only"] is False
        r = c.post(
            "/items", headers=auth(),
            data={"id": "uploads/violet.png", "captions": ["a purple square", "violet"],
                  "labels": ["cool", "new"]},
            files={"file": ("violet.png", png(COLOURS["purple"]), "image/png")},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        assert r.json() == {"id": "uploads/violet.png", "action": "added", "version": 2, "items": 6}
        top = c.post("/search/text", json={"query": "purple", "k": 1}).json()["results"][0]
        assert top["id"] == "uploads/violet.png" and top["labels"] == ["cool", "new"]
        caps = c.post("/search/text", json={"query": "purple", "k": 2, "target": "text"}).json()
        assert caps["results"][0]["caption"] == "a purple square"
        img = c.get("/items/uploads/violet.png/image")
        assert img.status_code == 200
        stored = Image.open(io.BytesIO(img.content))
        assert stored.size == (12, 12) and stored.getpixel((3, 3)) == COLOURS["purple"]
        stored_files = list((writable / "uploads").iterdir())
        assert len(stored_files) == 1 and stored_files[0].suffix == ".png"
        # the same id again: conflict, nothing written
        r = c.post("/items", headers=auth(), data={"id": "uploads/violet.png"},
                   files={"file": ("v.png", png(), "image/png")})  # fmt: skip
        assert r.status_code == 409 and "already" in r.json()["detail"]
        # a bad image: nothing written
        r = c.post("/items", headers=auth(), data={"id": "x.png"},
                   files={"file": ("x.png", b"GIF89a broken", "image/gif")})  # fmt: skip
        assert r.status_code == 415
        r = c.post("/items", headers=auth(), data={"id": "x.png", "captions": ["  "]},
                   files={"file": ("x.png", png(), "image/png")})  # fmt: skip
        assert r.status_code == 422 and "caption" in r.json()["detail"]
        assert Snapshot.open(writable).version == 2
        # delete
        r = c.delete("/items/images/red.png", headers=auth())
        assert r.status_code == 200, r.text
        assert r.json() == {"id": "images/red.png", "action": "deleted", "version": 3, "items": 5}
        assert c.get("/items/images/red.png").status_code == 404
        top = c.post("/search/text", json={"query": "red", "k": 1}).json()["results"][0]
        assert top["id"] != "images/red.png"
        r = c.delete("/items/images/red.png", headers=auth())
        assert r.status_code == 404
    snap = Snapshot.open(writable, verify=True)  # every file intact after all of it
    assert snap.version == 3 and len(snap.collections["image"]) == 5


def test_uploads_are_removed_with_their_last_item(
    writable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two items sharing one stored upload: the file goes only with the second, after commit."""
    import xmodal.serve.service as service_module

    app = create_app(writable, token=TOKEN)
    service = app.state.service
    seen: list[tuple[str, bool, bool]] = []  # (path, referenced?, file there?) at each removal
    drop = service._drop_upload

    def watched(path):
        snap = Snapshot.open(writable)  # the committed version, independently of the service
        ids = snap.meta.ids_of_keys(snap.meta.keys()).values()
        paths = {m.path for m in snap.meta.items(list(ids)).values()}
        snap.close()
        seen.append((path, path in paths, Path(path).is_file()))
        return drop(path)

    monkeypatch.setattr(service, "_drop_upload", watched)
    bytes_ = png(COLOURS["purple"])
    with TestClient(app) as c:
        for item_id in ("up/a.png", "up/b.png"):
            r = c.post("/items", headers=auth(), data={"id": item_id},
                       files={"file": ("p.png", bytes_, "image/png")})  # fmt: skip
            assert r.status_code == 201, r.text
        other = c.post("/items", headers=auth(), data={"id": "up/c.png"},
                       files={"file": ("g.png", png(COLOURS["green"]), "image/png")})  # fmt: skip
        assert other.status_code == 201
        uploads = writable / "uploads"
        assert len(list(uploads.iterdir())) == 2  # one file per content
        shared = uploads / (hashlib.sha256(bytes_).hexdigest() + ".png")
        assert shared.is_file()

        # a failed delete (nothing committed) keeps everything
        def fail(*a, **kw):
            raise OSError("disk on fire")

        monkeypatch.setattr(service_module, "delete_items", fail)
        r = c.delete("/items/up/a.png", headers=auth())  # an OS error: 500 naming it
        assert r.status_code == 500 and "disk on fire" in r.json()["detail"]
        assert shared.is_file() and c.get("/items/up/a.png").status_code == 200
        monkeypatch.undo()
        monkeypatch.setattr(service, "_drop_upload", watched)

        assert c.delete("/items/up/a.png", headers=auth()).status_code == 200
        assert shared.is_file()  # up/b.png still uses it
        assert c.get("/items/up/b.png/image").status_code == 200
        assert c.delete("/items/up/b.png", headers=auth()).status_code == 200
        assert not shared.is_file()  # the last reference went
        assert len(list(uploads.iterdir())) == 1  # up/c.png's file is untouched
        assert c.get("/items/up/c.png/image").status_code == 200
        # images of the indexed data set are never removed
        meta = service.searcher.snapshot.meta
        (red_id,) = meta.ids_of_keys(["images/red.png"]).values()
        red = Path(meta.items([red_id])[red_id].path)
        assert c.delete("/items/images/red.png", headers=auth()).status_code == 200
        assert red.is_file()
    # each removal was decided after its delete committed: the last reference was already gone
    # from the committed version when the (still present) file went
    assert [(Path(p).name, referenced, there) for p, referenced, there in seen] == [
        (shared.name, True, True), (shared.name, False, True), ("red.png", False, True)
    ]  # fmt: skip


def test_uploads_in_a_custom_folder_are_kept(writable: Path, tmp_path: Path) -> None:
    """A custom upload folder may be shared by several indexes: nothing in it is removed."""
    folder = tmp_path / "shared-uploads"
    with TestClient(create_app(writable, token=TOKEN, upload_dir=folder)) as c:
        r = c.post("/items", headers=auth(), data={"id": "up/a.png"},
                   files={"file": ("p.png", png(COLOURS["purple"]), "image/png")})  # fmt: skip
        assert r.status_code == 201
        assert c.delete("/items/up/a.png", headers=auth()).status_code == 200
    assert len(list(folder.iterdir())) == 1


def test_ids_ending_in_image(writable: Path) -> None:
    """``/items/{id}/image`` always means the image; ``GET /items?id=`` reaches every id."""
    with TestClient(create_app(writable, token=TOKEN)) as c:
        for item_id in ("shapes/image", "image"):
            r = c.post("/items", headers=auth(), data={"id": item_id, "captions": ["violet"]},
                       files={"file": ("p.png", png(COLOURS["purple"]), "image/png")})  # fmt: skip
            assert r.status_code == 201, r.text
        # the path form reads "shapes/image" as the image of an item "shapes"
        r = c.get("/items/shapes/image")
        assert r.status_code == 404 and "'shapes'" in r.json()["detail"]
        # the query form reaches it
        item = c.get("/items", params={"id": "shapes/image"}).json()
        assert item["id"] == "shapes/image" and item["captions"] == ["violet"]
        assert item["image_url"] == "/items/shapes/image/image"
        img = c.get(item["image_url"])
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(img.content)).getpixel((1, 1)) == COLOURS["purple"]
        assert c.get(item["thumbnail_url"]).status_code == 200
        assert c.get("/items/image").json()["id"] == "image"  # no "/" before "image": an id
        assert c.get("/items", params={"id": "images/red.png"}).json()["id"] == "images/red.png"
        # errors: missing, empty, unknown, path-like
        assert c.get("/items").status_code == 422
        assert c.get("/items", params={"id": ""}).status_code == 422
        r = c.get("/items", params={"id": "no/such/image"})
        assert r.status_code == 404 and "'no/such/image'" in r.json()["detail"]
        r = c.get("/items", params={"id": "../../etc/passwd"})
        assert r.status_code == 400 and "'..'" in r.json()["detail"]
        # DELETE has no image route: the path form takes the whole id
        r = c.delete("/items/shapes/image", headers=auth())
        assert r.status_code == 200 and r.json()["id"] == "shapes/image"
        assert c.get("/items", params={"id": "shapes/image"}).status_code == 404


def test_metrics(index: Path) -> None:
    with TestClient(create_app(index)) as c:
        c.post("/search/text", json={"query": "red"})
        c.post("/search/text", json={"query": "red", "k": 0})
        c.get("/items/images/red.png")
        c.get("/items/../../etc/passwd")
        text = c.get("/metrics").text
    assert 'xmodal_http_requests_total{method="POST",route="/search/text",status="200"} 1.0' in text
    assert 'xmodal_http_requests_total{method="POST",route="/search/text",status="422"} 1.0' in text
    assert 'route="/items/{item_id:path}",status="200"' in text
    assert "passwd" not in text  # routes are templates, never client paths
    assert (
        'xmodal_http_request_duration_seconds_bucket{le="0.1",method="POST",route="/search/text"}'
        in text
    )
    assert "xmodal_index_items 5.0" in text and "xmodal_index_version 1.0" in text
    # a second app has its own registry
    with TestClient(create_app(index)) as c:
        assert "/search/text" not in c.get("/metrics").text


def test_page_and_static_files(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    for needle in ('<script src="/static/app.js"', 'href="/static/style.css"', 'name="viewport"'):
        assert needle in html
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/../app.py").status_code == 404


def test_writes_pick_up_other_processes(writable: Path) -> None:
    """A version written beside the service (e.g. by ``xmodal index remove``) is picked up."""
    from xmodal.index import remove_from_index

    app = create_app(writable)
    app.state.service.refresh_every = 0.0
    with TestClient(app) as c:
        assert c.get("/health").json()["items"] == 5
        remove_from_index(writable, ["images/blue.png"])
        assert c.get("/health").json()["items"] == 4
        assert c.get("/items/images/blue.png").status_code == 404


def test_limits_are_configurable(index: Path) -> None:
    with pytest.raises(ValueError, match="max_k"):
        Limits(max_k=0)
    with TestClient(create_app(index, limits=Limits(max_k=3, max_query_chars=5))) as c:
        assert c.post("/search/text", json={"query": "red", "k": 3}).status_code == 200
        assert c.post("/search/text", json={"query": "red", "k": 4}).status_code == 422
        r = c.post("/search/text", json={"query": "purple"})
        assert r.status_code == 422 and "query" in r.json()["detail"]


def test_requests_at_once_are_capped(index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Limits.max_threads`` bounds the worker threads running requests (anyio's default: 40)."""
    import os
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    assert Limits().max_threads == min(32, (os.cpu_count() or 1) + 4)
    app = create_app(index, limits=Limits(max_threads=3))
    service = app.state.service
    running, most, lock = 0, 0, threading.Lock()
    search = service.search_text

    def slow(*a, **kw):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.15)
        with lock:
            running -= 1
        return search(*a, **kw)

    monkeypatch.setattr(service, "search_text", slow)
    with TestClient(app) as c, ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda _: c.post("/search/text", json={"query": "red"}).status_code,
                              range(10)))  # fmt: skip
    assert codes == [200] * 10
    assert most == 3


# --- the command line -------------------------------------------------------------------------
def test_cli_serve_reads_the_token_from_the_environment(
    index: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import xmodal.serve
    from xmodal.cli import app

    calls = []

    def run(*a, **kw):
        calls.append((a, kw))
        kw["on_ready"]()

    monkeypatch.setattr(xmodal.serve, "run", run)
    monkeypatch.setenv("MY_TOKEN", "from-env")
    runner = CliRunner()
    r = runner.invoke(app, ["serve", str(index), "--port", "8123", "--token-env", "MY_TOKEN"])
    assert r.exit_code == 0, r.output
    (args, kw) = calls[-1]
    assert Path(args[0]) == index and kw["host"] == "127.0.0.1" and kw["port"] == 8123
    assert kw["token"] == "from-env"
    monkeypatch.delenv("XMODAL_TOKEN", raising=False)
    r = runner.invoke(app, ["serve", str(index)])
    assert r.exit_code == 0 and calls[-1][1]["token"] is None and "read-only" in r.output
    (tmp_path / "tok").write_text("from-file\n")
    r = runner.invoke(app, ["serve", str(index), "--token-file", str(tmp_path / "tok")])
    assert r.exit_code == 0 and calls[-1][1]["token"] == "from-file"
    r = runner.invoke(app, ["serve", str(index), "--max-threads", "3", "--torch-threads", "2"])
    assert r.exit_code == 0 and calls[-1][1]["limits"].max_threads == 3
    assert calls[-1][1]["torch_threads"] == 2
    r = runner.invoke(app, ["serve", str(tmp_path)])
    assert r.exit_code == 2 and "not an xmodal index" in r.output


@pytest.mark.slow  # ~8 s: a tiny run trained and indexed on a slice of the OpenMoji set
@pytest.mark.filterwarnings("ignore:64-bit codes from a random rotation")  # 25 emoji: no ITQ
def test_cli_demo_serve_builds_and_serves_the_index(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``xmodal demo --serve``: the demo's run is indexed and that index served. The demo itself
    is swapped for a tiny run on every 100th emoji (the real one takes minutes)."""
    import json

    from conftest import openmoji_slice

    import xmodal.demo
    import xmodal.serve
    from xmodal.cli import app
    from xmodal.pipeline import train

    data = openmoji_slice(tmp_path / "emoji", 100)
    lines = (data / "data.jsonl").read_text(encoding="utf-8").splitlines()
    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XMODAL_TOKEN", TOKEN)
    monkeypatch.setattr(xmodal.demo, "demo_data_path", lambda: data)

    def tiny_demo(out, epochs, device, console):
        train(data, Path(out) / "infonce", "infonce", split="random:0.6,0.2,0.2",
              method_options={"embed_dim": 64},
              train_options={"device": "cpu", "progress": False, "epochs": 1})  # fmt: skip
        return {"winner": "infonce"}

    served: list[dict] = []

    def serve(index_dir, **kw):  # instead of uvicorn: the same app, queried in-process
        kw.pop("on_ready")()
        with TestClient(create_app(index_dir, token=kw["token"], device=kw["device"])) as c:
            first = json.loads(lines[0])
            text = c.post("/search/text", json={"query": first["captions"][0], "k": 3}).json()
            by_id = c.post("/search/image", data={"id": first["image"], "k": 3}).json()
            served.append({"index": Path(index_dir), "health": c.get("/health").json(),
                           "text": text, "by_id": by_id, **kw})  # fmt: skip

    monkeypatch.setattr(xmodal.demo, "run_demo", tiny_demo)
    monkeypatch.setattr(xmodal.serve, "run", serve)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["demo", "--out", str(out), "--serve", "--port", "8765",
                                 "--device", "cpu"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "writes need the bearer token" in r.output
    (got,) = served
    assert got["index"] == out / "index" and got["port"] == 8765 and got["host"] == "127.0.0.1"
    assert got["token"] == TOKEN and got["device"] == "cpu"
    health = got["health"]
    assert health["items"] == len(lines) and health["model"] == "run" and health["dim"] == 64
    assert health["read_only"] is False
    assert len(got["text"]["results"]) == 3
    top = got["by_id"]["results"][0]
    assert top["id"] == json.loads(lines[0])["image"] and top["score"] == pytest.approx(1, abs=1e-5)

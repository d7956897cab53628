"""The service against hostile input: costly images, saturation, stalled or unauthenticated
bodies, secrets in query strings, non-UTF-8 forms, full disks. Each gets a clear answer."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip(
    "fastapi", reason="the serve extra is not installed: pip install 'xmodal[serve]'"
)
pytest.importorskip("multipart", reason="python-multipart is missing: pip install 'xmodal[serve]'")

from fastapi.testclient import TestClient
from hostile_images import png_header
from serve_toys import TOKEN, LiveServer, auth, build_toy_index, png

from xmodal.index import Snapshot
from xmodal.serve import Limits, create_app
from xmodal.serve import service as service_module


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_index(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def client(index: Path):
    with TestClient(create_app(index, token=TOKEN)) as c:
        yield c


def upload(c: TestClient, data: bytes, name: str = "q.png"):
    return c.post("/search/image", files={"file": (name, data, "image/png")})


# --- decoded-cost limits ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "words"),
    [
        (png_header(20_000, 1), "max_aspect"),  # 101 bytes that would resize to 1.3 gigapixels
        (png_header(25_000_000, 1), "max_aspect"),  # once a 500 (OverflowError)
        (png_header(5000, 5000, 16, 2), "max_decoded_bytes"),  # 25 MP of 16-bit RGB: 150 MB
        (png_header(6000, 5000), "25,000,000"),  # plain pixel count
    ],
)
def test_costly_images_are_refused_before_decoding(client: TestClient, header, words) -> None:
    for r in (
        upload(client, header),
        client.post("/items", headers=auth(), data={"id": "x.png"},
                    files={"file": ("x.png", header, "image/png")}),
    ):  # fmt: skip
        assert r.status_code == 413, r.text
        assert words in r.json()["detail"] and "'q.png'" not in r.json()["detail"]


def test_resize_limit_follows_the_index_encoder(index: Path) -> None:
    app = create_app(index, limits=Limits(max_resized_pixels=256 * 256 * 3, max_aspect=10))
    with TestClient(app) as c:
        r = upload(c, png(size=(40, 10)))  # 4:1 -> 256 x 1024 after resizing
        assert r.status_code == 413 and "max_resized_pixels" in r.json()["detail"]
        assert upload(c, png(size=(30, 10))).status_code == 200


def test_image_work_is_bounded_with_busy_and_timeout_answers(
    index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slow image encode occupies the only worker: a second waits and times out (504), a
    third finds the queue full (503), and text searches answer meanwhile."""
    release = threading.Event()
    real = service_module.Service._embed_upload

    def slow(self, data):
        release.wait(10)
        return real(self, data)

    monkeypatch.setattr(service_module.Service, "_embed_upload", slow)
    limits = Limits(max_concurrent_encodes=1, max_queued_encodes=2, encode_timeout_s=1)
    with TestClient(create_app(index, limits=limits)) as c:
        results: dict[str, object] = {}
        first = threading.Thread(target=lambda: results.update(a=upload(c, png())))
        first.start()
        time.sleep(0.2)
        second = threading.Thread(target=lambda: results.update(b=upload(c, png())))
        second.start()
        time.sleep(0.2)
        busy = upload(c, png())
        assert busy.status_code == 503 and "max_queued_encodes" in busy.json()["detail"]
        assert busy.headers["retry-after"] == "1"
        start = time.perf_counter()
        text = c.post("/search/text", json={"query": "red", "k": 2})
        assert text.status_code == 200 and time.perf_counter() - start < 1.0
        second.join()
        assert results["b"].status_code == 504  # type: ignore[attr-defined]
        assert "encode_timeout_s" in results["b"].json()["detail"]  # type: ignore[attr-defined]
        release.set()
        first.join()
        assert results["a"].status_code == 504  # type: ignore[attr-defined]
        assert upload(c, png()).status_code == 200  # the pool recovers


# --- smaller hostile inputs -------------------------------------------------------------------
def test_head_health(client: TestClient) -> None:
    r = client.head("/health")
    assert r.status_code == 200 and r.content == b""


def test_k_must_be_an_integer_not_a_boolean(client: TestClient) -> None:
    for bad in (True, 2.0, "3"):
        r = client.post("/search/text", json={"query": "red", "k": bad})
        assert r.status_code == 422 and "k" in r.json()["detail"], bad
    assert client.post("/search/text", json={"query": "red", "k": 2}).status_code == 200


def test_form_fields_must_be_utf8(client: TestClient, index: Path) -> None:
    before = Snapshot.open(index).version
    boundary = "xmodalboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="id"\r\n\r\n'.encode()
        + b"probe/\xff\xfe"
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="p.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
        + png()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {**auth(), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = client.post("/items", content=body, headers=headers)
    assert r.status_code == 400 and "'id' is not valid utf-8" in r.json()["detail"]
    assert Snapshot.open(index).version == before
    ok = body.replace(b"probe/\xff\xfe", "probe/ÿþ".encode())
    assert client.post("/items", content=ok, headers=headers).status_code == 201
    assert client.get("/items", params={"id": "probe/ÿþ"}).json()["id"] == "probe/ÿþ"
    assert client.delete("/items/probe/ÿþ", headers=auth()).status_code == 200


def _raw(port: int, request: bytes, timeout: float = 10) -> tuple[bytes, float]:
    """Send raw bytes, return what the server answers (until it closes) and how long it took."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b'"}' in chunks[-1]:
                break
    return b"".join(chunks), time.perf_counter() - start


def test_live_server_refuses_stalled_and_unauthenticated_bodies(index: Path) -> None:
    app = create_app(index, token=TOKEN, limits=Limits(read_timeout_s=1))
    with LiveServer(app) as live:
        short = (
            b"POST /search/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"query": "red"'
        )
        answer, took = _raw(live.port, short)
        assert answer.startswith(b"HTTP/1.1 408") and b"stalled" in answer and took < 5
        # 10 MB declared, nothing sent: the 401 comes back without the body being read.
        big = (
            b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 10000000\r\n\r\n"
        )
        answer, took = _raw(live.port, big)
        assert answer.startswith(b"HTTP/1.1 401") and b"missing bearer token" in answer
        assert took < 1  # not the read timeout: answered at once
        wrong = big.replace(b"Host: x\r\n", b"Host: x\r\nAuthorization: Bearer nope\r\n")
        assert _raw(live.port, wrong)[0].startswith(b"HTTP/1.1 403")


def test_query_string_tokens_stay_out_of_the_access_log(index: Path) -> None:
    import httpx

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    app = create_app(index, token=TOKEN)
    with LiveServer(app, log_level="info", access_log=True) as live:
        handler = Keep()
        logging.getLogger("uvicorn.access").addHandler(handler)
        try:
            r = httpx.post(f"{live.url}/items?token={TOKEN}&x=1", data={"id": "q"})
            assert r.status_code == 401
            assert httpx.get(f"{live.url}/health?access_token={TOKEN}").status_code == 200
        finally:
            logging.getLogger("uvicorn.access").removeHandler(handler)
    joined = "\n".join(records)
    assert "/items?token=REDACTED&x=1" in joined and "access_token=REDACTED" in joined
    assert TOKEN not in joined


def test_full_disk_is_507_and_the_index_is_unchanged(
    index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(folder, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder))

    before = Snapshot.open(index).version
    monkeypatch.setattr(service_module, "append_items", full)
    monkeypatch.setattr(service_module, "delete_items", full)
    with TestClient(create_app(index, token=TOKEN)) as c:
        r = c.post("/items", headers=auth(), data={"id": "full.png"},
                   files={"file": ("f.png", png(), "image/png")})  # fmt: skip
        assert r.status_code == 507 and "no space left" in r.json()["detail"]
        r = c.delete("/items/images/red.png", headers=auth())
        assert r.status_code == 507 and "unchanged" in r.json()["detail"]
        assert c.get("/items/images/red.png").status_code == 200
    assert Snapshot.open(index).version == before


def test_serve_on_a_corrupt_index_fails_before_serving(index: Path, tmp_path: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from xmodal.cli import app

    broken = tmp_path / "broken"
    shutil.copytree(index, broken)
    snap = Snapshot.open(broken)
    victim = next(p for p in sorted(snap.folder.iterdir()) if p.suffix == ".faiss")
    snap.close()
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    r = CliRunner().invoke(app, ["serve", str(broken), "--port", "8999"])
    assert r.exit_code == 2, r.output
    assert "serving" not in r.output and victim.name in r.output and "SHA-256" in r.output
    assert "Traceback" not in r.output

"""Security of the HTTP service: write tokens, path-like ids, decompression bombs, upload size."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip(
    "fastapi", reason="the serve extra is not installed: pip install 'xmodal[serve]'"
)
pytest.importorskip("multipart", reason="python-multipart is missing: pip install 'xmodal[serve]'")

from fastapi.testclient import TestClient
from serve_toys import TOKEN, auth, build_toy_index, png

from xmodal.index import Snapshot
from xmodal.serve import Limits, create_app
from xmodal.serve.limits import BodyLimitMiddleware


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_index(tmp_path_factory.mktemp("sec"))


@pytest.fixture(scope="module")
def client(index: Path):
    with TestClient(create_app(index, token=TOKEN, limits=Limits(max_upload_bytes=200_000))) as c:
        yield c


def add(c: TestClient, headers: dict[str, str], item_id: str = "new.png"):
    return c.post("/items", headers=headers, data={"id": item_id},
                  files={"file": ("n.png", png(), "image/png")})  # fmt: skip


# --- tokens -----------------------------------------------------------------------------------
def test_write_endpoints_need_the_token(client: TestClient, index: Path) -> None:
    for headers in ({}, {"Authorization": ""}):
        r = add(client, headers)
        assert r.status_code == 401 and "bearer token" in r.json()["detail"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = client.delete("/items/images/red.png", headers=headers)
        assert r.status_code == 401
    for headers in ({"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}):
        assert add(client, headers).status_code == 401
    for wrong in ("nope", TOKEN + "x", TOKEN[:-1], TOKEN.upper()):
        r = add(client, auth(wrong))
        assert r.status_code == 403 and r.json()["detail"] == "wrong bearer token"
        assert client.delete("/items/images/red.png", headers=auth(wrong)).status_code == 403
    assert Snapshot.open(index).version == 1  # nothing was written
    assert client.get("/items/images/red.png").status_code == 200


def test_no_token_means_read_only(index: Path) -> None:
    for token in (None, ""):
        with TestClient(create_app(index, token=token)) as c:
            for headers in ({}, auth(), auth("")):
                r = add(c, headers)
                assert r.status_code == 403 and "read-only" in r.json()["detail"]
                assert c.delete("/items/images/red.png", headers=headers).status_code == 403
            assert c.get("/health").json()["read_only"] is True
    assert Snapshot.open(index).version == 1


# --- ids --------------------------------------------------------------------------------------
BAD_IDS = [
    ("..%2F..%2Fetc%2Fpasswd", "'..'"),
    ("images/..%2F..%2F..%2Fetc%2Fpasswd", "'..'"),
    ("%2E%2E/secret.png", "'..'"),
    ("%2Fetc%2Fpasswd", "absolute"),
    ("C:%5Cwindows%5Cwin.ini", "backslash"),
    ("C:/windows/win.ini", "absolute"),
    ("images/red.png%00.txt", "control"),
    ("%2E/images/red.png", "'.'"),
    ("x" * 600, "over the limit"),
]


@pytest.mark.parametrize(("raw", "words"), BAD_IDS)
def test_path_like_ids_are_refused(client: TestClient, raw: str, words: str) -> None:
    for method, url in (
        ("GET", f"/items/{raw}"),
        ("GET", f"/items/{raw}/image"),
        ("GET", f"/items/{raw}/image?size=32"),
        ("DELETE", f"/items/{raw}"),
    ):
        r = client.request(method, url, headers=auth())
        assert r.status_code == 400, (method, url, r.text)
        assert words in r.json()["detail"]
    from urllib.parse import unquote

    item_id = unquote(raw)
    if len(item_id) <= 512:
        r = client.post("/search/image", data={"id": item_id})
        assert r.status_code == 400 and words in r.json()["detail"]
    r = add(client, auth(), item_id)
    assert r.status_code in (400, 422) and r.json()["detail"]


def test_raw_dot_dot_paths_never_leave_the_index(client: TestClient) -> None:
    # a client that does not normalise the URL sends the dots as they are
    for path in ("/items/../../../etc/passwd", "/items/images/../../../../etc/passwd/image"):
        r = client.get(path)
        assert r.status_code in (400, 404)
        assert b"root:" not in r.content


# --- images -----------------------------------------------------------------------------------
def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (with a tiny, bogus body)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused(client: TestClient, index: Path) -> None:
    # a real one: 6,000 x 5,000 grey pixels (30 MP > the 25 MP limit) in a ~30 kB file
    bomb = io.BytesIO()
    Image.new("L", (6000, 5000)).save(bomb, format="PNG", optimize=True)
    assert len(bomb.getvalue()) < 200_000
    for data in (bomb.getvalue(), png_header_only(100_000, 100_000)):
        r = client.post("/search/image", files={"file": ("b.png", data, "image/png")})
        assert r.status_code == 413, r.text
        assert "pixels" in r.json()["detail"] or "bomb" in r.json()["detail"]
        r = client.post("/items", headers=auth(), data={"id": "bomb.png"},
                        files={"file": ("b.png", data, "image/png")})  # fmt: skip
        assert r.status_code == 413
    assert Snapshot.open(index).version == 1


def test_oversized_uploads_are_refused(client: TestClient) -> None:
    big = b"\x89PNG" + b"\0" * 300_000  # over the 200 kB limit of this app
    r = client.post("/search/image", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = client.post("/search/text", content=b"{" + b" " * 300_000 + b"}",
                    headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 413
    # the file part alone over the limit while the body is within limit + form overhead
    part = b"\x89PNG" + b"\0" * 210_000
    r = client.post("/search/image", files={"file": ("big.png", part, "image/png")})
    assert r.status_code == 413 and "'big.png'" in r.json()["detail"]


def test_body_limit_stops_reading_early() -> None:
    """The limit is enforced on the stream: a declared size over it is refused before any byte
    of the body is read, and an undeclared (chunked) one as soon as it passes the limit."""
    received: list[int] = []

    async def app(scope, receive, send):
        while True:  # an app that reads everything it is given
            message = await receive()
            received.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = BodyLimitMiddleware(app, limit=100_000)

    def run(headers: list[tuple[bytes, bytes]], chunks: int) -> tuple[int, dict, int]:
        pulled = 0
        sent: list[dict] = []

        async def receive():
            nonlocal pulled
            pulled += 1
            return {"type": "http.request", "body": b"x" * 10_000, "more_body": pulled < chunks}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
        try:
            asyncio.run(limited(scope, receive, send))
        except Exception as e:  # raised from receive: the app's HTTP layer turns it into a 413
            assert getattr(e, "status_code", None) == 413 and "limit" in e.detail
            return 413, {}, pulled
        body = json.loads(sent[1]["body"]) if sent[0]["status"] != 200 else {}
        return sent[0]["status"], body, pulled

    status, body, pulled = run([(b"content-length", b"50000000")], 5000)
    assert status == 413 and pulled == 0 and "50,000,000 bytes" in body["detail"]
    status, _, pulled = run([], 5000)  # 50 MB, chunked
    assert status == 413 and pulled == 11  # 110 kB read of 50 MB
    status, body, pulled = run([(b"content-length", b"lots")], 1)
    assert status == 400 and pulled == 0
    assert run([], 5)[0] == 200


def test_bad_requests_do_not_hurt_the_index(client: TestClient, index: Path) -> None:
    """A barrage of hostile requests: every one a JSON 4xx, the index intact afterwards."""
    hostile = [
        (
            "POST",
            "/search/text",
            {"content": b"\xff\xfe\x00garbage", "headers": {"content-type": "application/json"}},
        ),
        ("POST", "/search/text", {"json": {"query": "red", "k": 10**30}}),
        ("POST", "/search/text", {"json": {"query": "red", "k": 3.5}}),
        ("POST", "/search/text", {"json": {"query": ["red"]}}),
        ("POST", "/search/text", {"json": [1, 2, 3]}),
        (
            "POST",
            "/search/image",
            {
                "content": b"--x\r\nbroken",
                "headers": {"content-type": "multipart/form-data; boundary=x"},
            },
        ),
        (
            "POST",
            "/search/image",
            {"content": b"nothing", "headers": {"content-type": "multipart/form-data"}},
        ),
        (
            "POST",
            "/search/image",
            {"files": {"file": ("x.gif", b"GIF89a" + b"\xff" * 100, "image/gif")}},
        ),
        ("POST", "/items", {"headers": auth(), "data": {"id": "a.png"}}),
        ("POST", "/items", {"headers": auth(), "files": {"file": ("a.png", png(), "image/png")}}),
        ("GET", "/items/", {}),
        ("GET", "/items/images/red.png/image?size=abc", {}),
    ]
    for method, url, kw in hostile:
        r = client.request(method, url, **kw)
        assert 400 <= r.status_code < 500, (url, kw, r.status_code, r.text)
        assert r.headers["content-type"] == "application/json" and r.json()["detail"]
    assert client.get("/health").json()["status"] == "ok"
    snap = Snapshot.open(index, verify=True)
    assert snap.version == 1 and len(snap.collections["image"]) == 5

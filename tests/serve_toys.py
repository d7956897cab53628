"""A tiny colour index for the ``test_serve_*`` files (imported by them; not a test file).

The index is built with the toy dual encoder ``toyclip:<name>`` of ``conftest.py`` (colour names
and the mean colour of a coloured square in one 6-d space), so searches have known answers and
tests take milliseconds.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from conftest import COLOURS, toy_weights_file
from conftest import colour_png as png
from PIL import Image

from xmodal.index import build_index

__all__ = ["COLOURS", "LABELS", "TOKEN", "LiveServer", "auth", "build_toy_index", "png"]

TOKEN = "s3cret-token"
LABELS = {"red": "warm", "orange": "warm", "yellow": "warm", "green": "cool", "blue": "cool"}


def build_toy_index(root: Path, skip: Sequence[str] = ("purple",)) -> Path:
    """An index of coloured squares ("images/<colour>.png"), two captions each, some labels."""
    data = root / "data"
    (data / "images").mkdir(parents=True)
    lines = []
    for name, rgb in COLOURS.items():
        if name in skip:
            continue
        Image.new("RGB", (24, 16), rgb).save(data / "images" / f"{name}.png")
        labels = [LABELS[name]] if name in LABELS else []
        caps = [f"a {name} square", f"something {name}"]
        lines.append(
            json.dumps({"image": f"images/{name}.png", "captions": caps, "labels": labels})
        )
    (data / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    weights = toy_weights_file(root / "toy.npy")
    build_index(
        None, data, root / "ix", encoder="toyclip:tiny", weights=weights, bits=8, codes="random",
        cache_dir=root / "cache", progress=False,
    )  # fmt: skip
    return root / "ix"


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class LiveServer:
    """A real uvicorn server for an app, on a free loopback port, in a thread."""

    def __init__(self, app, **config) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config.setdefault("log_level", "warning")
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, **config)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

"""A tiny colour index for the ``test_serve_*`` files (imported by them; not a test file).

A dual encoder registered as ``servetoy:<weights>`` maps colour names and the mean colour of a
coloured square into one 6-d space, so searches have known answers and tests take milliseconds.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from xmodal.encoders.base import (
    ImageEncoder,
    TextEncoder,
    file_digest,
    register_image_encoder,
    register_text_encoder,
)
from xmodal.index import build_index

TOKEN = "s3cret-token"
COLOURS = {
    "red": (230, 20, 20),
    "green": (20, 200, 30),
    "blue": (25, 30, 220),
    "yellow": (240, 230, 20),
    "orange": (250, 140, 10),
    "purple": (130, 20, 200),
}
LABELS = {"red": "warm", "orange": "warm", "yellow": "warm", "green": "cool", "blue": "cool"}


# --- a tiny dual encoder: colours in, colours out --------------------------------------------
class ToyImage(ImageEncoder):
    """Mean RGB of a 4x4 thumbnail through the 3 x 6 projection in the weights file."""

    name = "servetoy"
    dim = 6

    def __init__(self, weights: str | None, device=None) -> None:
        self.device = torch.device("cpu")
        self.weights = weights
        self.proj = torch.from_numpy(np.load(weights)).float()

    @property
    def key(self) -> str:
        return f"servetoy@{file_digest(self.weights)}/image"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        arr = np.asarray(image.resize((4, 4)), dtype=np.float32) / 255
        return torch.from_numpy(arr).permute(2, 0, 1)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.mean(dim=(2, 3)) @ self.proj


class ToyText(TextEncoder):
    """Mean of the colours named in the text (grey when none is), through the same projection."""

    name = "servetoy"
    dim = 6

    def __init__(self, weights: str | None, device=None) -> None:
        self.weights = weights
        self.proj = np.load(weights).astype(np.float32)

    @property
    def key(self) -> str:
        return f"servetoy@{file_digest(self.weights)}/text"

    def encode(self, texts: Sequence[str], batch_size: int = 256, progress: bool = True):
        rows = []
        for t in texts:
            named = [np.asarray(c) / 255 for w, c in COLOURS.items() if w in t.lower()]
            rows.append(np.mean(named, axis=0) if named else np.full(3, 0.5))
        return (np.asarray(rows, dtype=np.float32) @ self.proj).reshape(len(texts), self.dim)


register_image_encoder("servetoy:*")(lambda variant, device=None, weights=None: ToyImage(weights))
register_text_encoder("servetoy:*")(lambda variant, device=None, weights=None: ToyText(weights))


def png(rgb: tuple[int, int, int] = (230, 20, 20), size: tuple[int, int] = (12, 12)) -> bytes:
    """PNG bytes of a plain square."""
    out = io.BytesIO()
    Image.new("RGB", size, rgb).save(out, format="PNG")
    return out.getvalue()


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
        lines.append(json.dumps({"image": f"images/{name}.png", "captions": caps, "labels": labels}))
    (data / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    weights = root / "toy.npy"
    np.save(weights, np.random.default_rng(0).standard_normal((3, 6)))
    build_index(
        None, data, root / "ix", encoder="servetoy:tiny", weights=weights, bits=8, codes="random",
        cache_dir=root / "cache", progress=False,
    )  # fmt: skip
    return root / "ix"


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class LiveServer:
    """A real uvicorn server for an app, on a free loopback port, in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
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

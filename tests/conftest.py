"""Fixtures and builders shared by several test files.

* the shipped OpenMoji set in small slices (:func:`openmoji_slice`, fixture ``openmoji``);
* a tiny dual encoder, ``toyclip:<name>``, that maps colour names and the mean colour of a
  coloured square into one 6-d space, so searches have known answers in milliseconds
  (:data:`COLOURS`, :func:`toy_weights_file`, :func:`colour_png`; fixture ``toy_weights``).

Test files import the plain builders (``from conftest import COLOURS``); fixtures need no import.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xmodal.demo import demo_data_path
from xmodal.encoders.base import (
    ImageEncoder,
    TextEncoder,
    file_digest,
    register_image_encoder,
    register_text_encoder,
)


@pytest.fixture()
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread is fastest, and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the shipped OpenMoji set, in slices -------------------------------------------------------
OPENMOJI = demo_data_path()


def openmoji_slice(out: Path, step: int = 1, start: int = 0, count: int | None = None) -> Path:
    """Write records ``start, start + step, ...`` (at most ``count``) of the shipped OpenMoji set,
    with their images, captions and labels, as a JSONL folder ``out``."""
    lines = (OPENMOJI / "data.jsonl").read_text(encoding="utf-8").splitlines()[start::step]
    lines = lines[:count] if count is not None else lines
    (out / "images").mkdir(parents=True)
    for line in lines:
        shutil.copy(OPENMOJI / json.loads(line)["image"], out / "images")
    (out / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def openmoji(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``openmoji(step, start=0, count=None)``: a session-wide slice folder, written once."""
    made: dict[tuple[int, int, int | None], Path] = {}

    def get(step: int = 1, start: int = 0, count: int | None = None) -> Path:
        key = (step, start, count)
        if key not in made:
            made[key] = openmoji_slice(tmp_path_factory.mktemp("openmoji"), step, start, count)
        return made[key]

    return get


# --- a tiny dual encoder: colours in, colours out ----------------------------------------------
COLOURS = {
    "red": (230, 20, 20),
    "green": (20, 200, 30),
    "blue": (25, 30, 220),
    "yellow": (240, 230, 20),
    "orange": (250, 140, 10),
    "purple": (130, 20, 200),
}


class ToyImage(ImageEncoder):
    """Mean RGB of a 4x4 thumbnail through the 3 x 6 projection in the weights file."""

    name = "toyclip"
    dim = 6

    def __init__(self, weights: str | Path) -> None:
        self.device = torch.device("cpu")
        self.weights = weights
        self.proj = torch.from_numpy(np.load(weights)).float()

    @property
    def key(self) -> str:
        return f"toyclip@{file_digest(self.weights)}/image"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        arr = np.asarray(image.resize((4, 4)), dtype=np.float32) / 255
        return torch.from_numpy(arr).permute(2, 0, 1)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.mean(dim=(2, 3)) @ self.proj


class ToyText(TextEncoder):
    """Mean of the colours named in the text (grey when none is), through the same projection."""

    name = "toyclip"
    dim = 6

    def __init__(self, weights: str | Path) -> None:
        self.weights = weights
        self.proj = np.load(weights).astype(np.float32)

    @property
    def key(self) -> str:
        return f"toyclip@{file_digest(self.weights)}/text"

    def encode(
        self, texts: Sequence[str], batch_size: int = 256, progress: bool = True
    ) -> np.ndarray:
        rows = []
        for t in texts:
            named = [np.asarray(c) / 255 for w, c in COLOURS.items() if w in t.lower()]
            rows.append(np.mean(named, axis=0) if named else np.full(3, 0.5))
        return (np.asarray(rows, dtype=np.float32) @ self.proj).reshape(len(texts), self.dim)


register_image_encoder("toyclip:*")(lambda variant, device=None, weights=None: ToyImage(weights))
register_text_encoder("toyclip:*")(lambda variant, device=None, weights=None: ToyText(weights))


def toy_weights_file(path: Path, seed: int = 0) -> Path:
    """Save a random 3 x 6 projection of the toy dual encoder to ``path`` (``.npy``)."""
    np.save(path, np.random.default_rng(seed).standard_normal((3, 6)))
    return path


@pytest.fixture()
def toy_weights(tmp_path: Path) -> Path:
    """Weights of ``toyclip:<name>`` (seed 0)."""
    return toy_weights_file(tmp_path / "toy.npy")


# --- a tiny random-weight open_clip model (optional extra ``clip``) ----------------------------
TINY_CLIP = "xmodal-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_clip_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Register the :data:`TINY_CLIP` architecture and save one random model's weights (seed 0);
    skips without open_clip."""
    open_clip = pytest.importorskip(
        "open_clip",
        reason=(
            "open_clip is an optional extra (pip install 'xmodal[clip]'); it needs torchvision, "
            "and PyPI's torchvision does not load beside the CPU torch 2.13.0 used here "
            "(operator torchvision::nms does not exist)"
        ),
    )
    folder = tmp_path_factory.mktemp("open_clip")
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(folder / f"{TINY_CLIP}.json")
    torch.manual_seed(0)
    path = folder / "tiny.pt"
    torch.save(open_clip.create_model(TINY_CLIP, pretrained=None).state_dict(), path)
    return path


def noise_picture(seed: int, size: tuple[int, int] = (50, 40)) -> Image.Image:
    """A ``size`` (width, height) RGB picture of uniform noise, the same for the same seed."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def colour_png(
    rgb: tuple[int, int, int] = (230, 20, 20), size: tuple[int, int] = (12, 12)
) -> bytes:
    """PNG bytes of a plain square."""
    out = io.BytesIO()
    Image.new("RGB", size, rgb).save(out, format="PNG")
    return out.getvalue()

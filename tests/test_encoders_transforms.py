"""ResizeCenterCrop resamples only the crop window, and matches resize-then-crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import OPENMOJI
from PIL import Image

from xmodal.datasets.images import load_image
from xmodal.encoders.transforms import ResizeCenterCrop, resize_shorter_side

FLICKR_1K = Path(__file__).parents[1].parent / "shared" / "data" / "flickr8k-1k"
TRANSFORMS = [
    ResizeCenterCrop(),
    ResizeCenterCrop(288, 260),
    ResizeCenterCrop(256, 224, "bilinear"),
    ResizeCenterCrop(224, 224),
]


def _resize_then_crop(image: Image.Image, t: ResizeCenterCrop) -> np.ndarray:
    """The two-step reference: resize the whole image, then cut the centred square."""
    resized = resize_shorter_side(image, t.resize, t.resample)
    w, h = resized.size
    left, top = round((w - t.crop) / 2.0), round((h - t.crop) / 2.0)
    return np.asarray(resized.crop((left, top, left + t.crop, top + t.crop)), dtype=np.int16)


def _compare(images: list[Image.Image], t: ResizeCenterCrop) -> tuple[int, float]:
    """(largest absolute difference, fraction of values that differ) over ``images``."""
    worst, differing, total = 0, 0, 0
    for image in images:
        ours = t(image).numpy().transpose(1, 2, 0).astype(np.int16)
        ref = _resize_then_crop(image, t)
        assert ours.shape == ref.shape == (t.crop, t.crop, 3)
        diff = np.abs(ours - ref)
        worst, differing, total = (
            max(worst, int(diff.max())),
            differing + int((diff > 0).sum()),
            total + diff.size,
        )
    return worst, differing / total


@pytest.mark.parametrize("t", TRANSFORMS, ids=lambda t: t.tag)
def test_matches_resize_then_crop_on_real_photos(t: ResizeCenterCrop) -> None:
    if not FLICKR_1K.is_dir():
        pytest.skip(f"real data not found at {FLICKR_1K}")
    paths = sorted((FLICKR_1K / "images").glob("*.jpg"))[:40]
    images = [load_image(p) for p in paths]
    assert len({im.size for im in images}) > 5, "the slice should hold several aspect ratios"
    worst, frac = _compare(images, t)
    assert worst <= 2 and frac < 5e-3, (worst, frac)


@pytest.mark.parametrize("t", TRANSFORMS, ids=lambda t: t.tag)
def test_matches_resize_then_crop_on_odd_shapes(t: ResizeCenterCrop) -> None:
    """Smooth synthetic pictures (photo-like content) of shapes the real sets lack."""
    rng = np.random.default_rng(0)
    images = []
    for w, h in [(200, 150), (150, 200), (640, 427), (97, 301), (256, 256), (1000, 999)]:
        grid = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
        images.append(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC))
    worst, frac = _compare(images, t)
    # PIL may run its two passes in the other order for the smaller window (97 x 301 here), so
    # rounding differs more often than on the photos, but never by more than 2 of 255
    assert worst <= 2 and frac < 2e-2, (worst, frac)


def test_square_photos_are_identical() -> None:
    """Upscaled squares (the OpenMoji PNGs) come out bit for bit as resize-then-crop."""
    images = [load_image(p) for p in sorted((OPENMOJI / "images").glob("*.png"))[:20]]
    assert _compare(images, ResizeCenterCrop()) == (0, 0.0)


def test_rejects_non_rgb_and_bad_sizes() -> None:
    with pytest.raises(ValueError, match="RGB"):
        ResizeCenterCrop()(Image.new("L", (300, 300)))
    with pytest.raises(ValueError, match="crop"):
        ResizeCenterCrop(200, 224)
    with pytest.raises(ValueError, match="resample"):
        ResizeCenterCrop(resample="box")

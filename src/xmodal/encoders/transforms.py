"""Per-image preprocessing that runs in data-loader workers: small, picklable, torch-only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

__all__ = ["ResizeCenterCrop", "resize_shorter_side"]

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def _shorter_side_size(w: int, h: int, size: int) -> tuple[int, int]:
    """``(width, height)`` with the shorter side ``size`` and the longer ``int(size * long /
    short)`` (truncated), as torchvision's ``Resize(size)``."""
    return (size, int(size * h / w)) if w <= h else (int(size * w / h), size)


def resize_shorter_side(image: Image.Image, size: int, resample: str = "bicubic") -> Image.Image:
    """Resize so the shorter side is ``size`` pixels, keeping the aspect ratio.

    The longer side is ``int(size * long / short)`` (truncated), as torchvision's ``Resize(size)``.
    """
    if resample not in _RESAMPLE:
        raise ValueError(f"unknown resample {resample!r}; known: {', '.join(sorted(_RESAMPLE))}")
    w, h = image.size
    new = _shorter_side_size(w, h, size)
    if new == (w, h):
        return image
    return image.resize(new, _RESAMPLE[resample])


def _resize_crop(image: Image.Image, size: int, crop: int, resample: str) -> Image.Image:
    """Resize the shorter side to ``size``, then take the centred ``crop`` square, in one pass.

    Only the cropped window is resampled: PIL's ``resize`` with a ``box`` in source coordinates
    computes the output pixels that resize-then-crop keeps (its filter still reads the source
    pixels just outside the box), without resampling the margins the crop throws away. The result
    equals resize-then-crop up to PIL's fixed-point rounding: identical on Flickr8k's 224 x 224
    photos, and elsewhere never more than 2 of 255 apart (on about 2 in 10,000 values of
    Flickr8k's other shapes; PIL may order its two passes differently for the smaller window).
    Cost per Flickr8k photo: 1.26 ms instead of 1.85 ms.
    """
    w, h = image.size
    nw, nh = _shorter_side_size(w, h, size)
    left = round((nw - crop) / 2.0)
    top = round((nh - crop) / 2.0)
    if (nw, nh) == (w, h):
        return image.crop((left, top, left + crop, top + crop))
    sx, sy = w / nw, h / nh
    box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
    return image.resize((crop, crop), _RESAMPLE[resample], box=box)


@dataclass(frozen=True)
class ResizeCenterCrop:
    """RGB PIL image -> ``[3, crop, crop]`` uint8 tensor: resize shorter side, then centre-crop.

    Normalisation is left to the encoder's ``forward`` (on the device, in float), so workers ship
    uint8 batches. The crop offsets round as torchvision's ``CenterCrop``.

    Attributes:
        resize: Target length of the shorter side.
        crop: Side of the square centre crop (must not exceed ``resize``).
        resample: ``"bicubic"``, ``"bilinear"``, ``"lanczos"`` or ``"nearest"``.
    """

    resize: int = 256
    crop: int = 224
    resample: str = "bicubic"

    def __post_init__(self) -> None:
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"crop ({self.crop}) must be in 1..resize ({self.resize})")
        if self.resample not in _RESAMPLE:
            raise ValueError(
                f"unknown resample {self.resample!r}; known: {', '.join(sorted(_RESAMPLE))}"
            )

    @property
    def tag(self) -> str:
        """Short description for cache keys, e.g. ``"bicubic256-crop224"``."""
        return f"{self.resample}{self.resize}-crop{self.crop}"

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {image.mode!r}")
        image = _resize_crop(image, self.resize, self.crop, self.resample)
        # HWC -> CHW in NumPy: torch's multi-threaded copy of such a small tensor is up to 100x
        # slower in a process with several intra-op threads (measured: 11.6 ms vs 0.13 ms).
        chw = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))
        return torch.from_numpy(chw)

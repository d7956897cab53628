"""``A+B``: several image encoders as one, their L2-normalised features side by side.

``get_image_encoder("efficientnet-lite0+efficientnet-lite1")`` builds both parts and returns a
:class:`ConcatImageEncoder` of dimension ``1280 + 1280``. Each part keeps its own preprocessing
(its resolution, its resampling): an image is decoded once and preprocessed by every part, the
tensors travel from the data-loader workers flattened into one, and ``forward`` runs each
part's forward pass on its slice. Every part's features are scaled to unit length before they
are joined, so no part dominates by its scale. The cache key joins the parts' keys, so the
features are cached like any encoder's (and encoded again when any part changes).

Parts must preprocess every image to one fixed shape (resize and crop, as the packaged
EfficientNets do); that is checked on two probe images when the encoder is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import prod

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from xmodal.encoders.base import ImageEncoder

__all__ = ["SEPARATOR", "ConcatImageEncoder", "part_names"]

#: Joins the names of the parts: ``"efficientnet-lite0+efficientnet-lite1"``.
SEPARATOR = "+"

_PROBES = ((64, 48), (48, 64))  # (width, height): a landscape and a portrait image


def part_names(name: str) -> list[str] | None:
    """The parts of a concatenation name, or ``None`` when ``name`` is a single encoder.

    Raises:
        ValueError: an empty part (``"a++b"``, a leading or trailing ``+``).
    """
    if SEPARATOR not in name:
        return None
    parts = [p.strip() for p in name.split(SEPARATOR)]
    if not all(parts):
        raise ValueError(f"image encoder {name!r}: empty part between {SEPARATOR!r} signs")
    return parts


@dataclass(frozen=True)
class _Layout:
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def size(self) -> int:
        return prod(self.shape)


@dataclass(frozen=True)
class ConcatTransform:
    """Picklable per-image preprocessing of a concatenation: every part's tensor, flattened
    and joined (as float32 when the parts' dtypes differ; uint8 values stay exact).

    Attributes:
        transforms: Each part's transform.
        dtype: The joined tensor's dtype.
        resize: The largest shorter side any part resizes to (read by the server's upload
            limits).
    """

    transforms: tuple[Callable[[Image.Image], torch.Tensor], ...]
    dtype: torch.dtype
    resize: int

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.cat([t(image).reshape(-1).to(self.dtype) for t in self.transforms])


class ConcatImageEncoder(ImageEncoder):
    """Image encoders whose L2-normalised features are concatenated (see the module docstring).

    Args:
        parts: Two or more built image encoders, on the same device.

    Raises:
        ValueError: fewer than two parts, parts on different devices, or a part whose
            preprocessed shape depends on the image.
    """

    def __init__(self, parts: Sequence[ImageEncoder]) -> None:
        self.parts = tuple(parts)
        if len(self.parts) < 2:
            raise ValueError("a concatenation needs at least two image encoders")
        devices = {str(p.device) for p in self.parts}
        if len(devices) > 1:
            raise ValueError(f"the parts of a concatenation run on different devices: {devices}")
        self.name = SEPARATOR.join(p.name for p in self.parts)
        self.dim = sum(p.dim for p in self.parts)
        self.device = self.parts[0].device
        self.runtime = SEPARATOR.join(dict.fromkeys(p.runtime for p in self.parts))
        self.weights_source = SEPARATOR.join(dict.fromkeys(p.weights_source for p in self.parts))
        self._layouts = tuple(_layout(p) for p in self.parts)
        dtypes = {layout.dtype for layout in self._layouts}
        self._transform = ConcatTransform(
            tuple(p.transform for p in self.parts),
            dtypes.pop() if len(dtypes) == 1 else torch.float32,
            max(int(getattr(p.transform, "resize", 0)) for p in self.parts) or 256,
        )

    @property
    def key(self) -> str:
        return "concat(" + ",".join(p.key for p in self.parts) + ")"

    @property
    def can_encode(self) -> bool:
        return all(p.can_encode for p in self.parts)

    @property
    def transform(self) -> ConcatTransform:
        return self._transform

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Every part's preprocessed tensor, flattened and joined into one 1-D tensor."""
        return self._transform(image)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """``[B, sum of part sizes]`` joined inputs -> ``[B, dim]`` joined unit-length features."""
        out, start = [], 0
        for part, layout in zip(self.parts, self._layouts, strict=True):
            x = batch[:, start : start + layout.size].reshape(-1, *layout.shape).to(layout.dtype)
            out.append(F.normalize(part.forward(x).float(), dim=1))
            start += layout.size
        return torch.cat(out, dim=1)

    def encode(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Encode in-memory images with every part (each part's own ``encode``) and join."""
        feats = [torch.from_numpy(p.encode(images, batch_size)) for p in self.parts]
        return torch.cat([F.normalize(f, dim=1) for f in feats], dim=1).numpy()


def _layout(part: ImageEncoder) -> _Layout:
    """The fixed shape and dtype of ``part``'s preprocessed tensors, from two probe images."""
    seen = {
        (tuple(t.shape), t.dtype)
        for t in (part.preprocess(Image.new("RGB", size, (128, 128, 128))) for size in _PROBES)
    }
    if len(seen) != 1:
        shapes = sorted(str(s) for s, _ in seen)
        raise ValueError(
            f"image encoder {part.name!r} preprocesses images to shapes that depend on the image "
            f"({', '.join(shapes)}); only fixed-shape encoders can be concatenated"
        )
    shape, dtype = seen.pop()
    return _Layout(shape, dtype)

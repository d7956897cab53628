"""``precomputed``: features that already exist, from the dataset or a ``.npy`` file.

Feature-only collections (MIRFlickr-25K / NUS-WIDE ``.mat``/``.h5``) carry ``image_features`` and
``text_features``; a ``.npy`` file given as ``path=`` works for any dataset with matching rows.
These encoders cannot encode new inputs (``can_encode`` is ``False``; callers ask first, and the
encoding methods raise ``ValueError``): :meth:`features` hands the rows over, and the feature
cache passes them through untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from PIL import Image

from xmodal.encoders.base import (
    EncoderInfo,
    ImageEncoder,
    TextEncoder,
    file_digest,
    register_image_encoder,
    register_text_encoder,
)
from xmodal.errors import BadInputError

if TYPE_CHECKING:
    from xmodal.datasets.record import Dataset

__all__ = ["PrecomputedImageEncoder", "PrecomputedTextEncoder", "load_feature_file"]

Modality = Literal["image", "text"]


def load_feature_file(path: str | Path) -> np.ndarray:
    """Memory-map a 2-D numeric ``.npy`` file.

    Raises:
        BadInputError: the file is missing, unreadable, or not a 2-D numeric array.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "feature file not found")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BadInputError(path, f"not a readable .npy array ({e})") from e
    if not isinstance(arr, np.ndarray) or arr.ndim != 2:
        raise BadInputError(
            path, f"expected a 2-D [rows, dim] array, got shape {getattr(arr, 'shape', '?')}"
        )
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise BadInputError(path, f"expected numbers, got dtype {arr.dtype}")
    return arr


class _Precomputed:
    modality: Modality

    def _init(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.weights_source = "dataset" if self.path is None else f"file {self.path}"
        self._array = load_feature_file(self.path) if self.path is not None else None
        #: Feature size; 0 until known (dataset features are only seen in ``features``).
        self.dim = int(self._array.shape[1]) if self._array is not None else 0

    runtime = "none"

    @property
    def can_encode(self) -> bool:
        """Always ``False``: these are rows, not a model."""
        return False

    def _refuse(self) -> ValueError:
        noun = "images" if self.modality == "image" else "texts"
        return ValueError(
            f"precomputed {self.modality} features cannot encode new {noun}; "
            f"use a real {self.modality} encoder"
        )

    @property
    def key(self) -> str:
        """``precomputed:<modality>`` (dataset arrays) or ``precomputed@<file digest>``."""
        if self.path is None:
            return f"precomputed:{self.modality}"
        return f"precomputed@{file_digest(self.path)}"

    def features(self, dataset: Dataset) -> np.ndarray:
        """The rows for ``dataset``: its own ``<modality>_features`` or the ``.npy`` file's rows.

        Image rows must number ``len(dataset)``; text rows ``len(dataset)`` (one vector per
        record, e.g. tag vectors) or the number of captions (``Dataset.captions()`` order).

        Raises:
            ValueError: the dataset has no such features, or the row count does not match.
        """
        where = str(self.path) if self.path is not None else f"dataset {dataset.name!r}"
        arr = (
            self._array
            if self._array is not None
            else getattr(dataset, f"{self.modality}_features")
        )
        if arr is None:
            raise ValueError(
                f"dataset {dataset.name!r} has no precomputed {self.modality} features; "
                f"choose a {self.modality} encoder (see list_encoders()) or pass path=<file.npy>"
            )
        arr = np.asarray(arr) if not isinstance(arr, np.ndarray) else arr
        if arr.ndim != 2:
            raise ValueError(
                f"{where}: {self.modality} features must be 2-D, got shape {arr.shape}"
            )
        allowed = {len(dataset)}
        if self.modality == "text":
            allowed.add(sum(len(r.captions) for r in dataset.records))
        if arr.shape[0] not in allowed:
            raise ValueError(
                f"{where}: {arr.shape[0]} {self.modality} feature rows, but dataset "
                f"{dataset.name!r} needs {' or '.join(str(n) for n in sorted(allowed))}"
            )
        self.dim = int(arr.shape[1])
        return arr


class PrecomputedImageEncoder(_Precomputed, ImageEncoder):
    """Image features that already exist (see the module docstring); cannot encode new images."""

    name = "precomputed"
    modality: Modality = "image"

    def __init__(
        self, path: str | Path | None = None, device: str | torch.device | None = None
    ) -> None:
        self.device = torch.device("cpu")
        self._init(path)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Not available (``can_encode`` is ``False``): raises ``ValueError``."""
        raise self._refuse()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Not available (``can_encode`` is ``False``): raises ``ValueError``."""
        raise self._refuse()


class PrecomputedTextEncoder(_Precomputed, TextEncoder):
    """Text features that already exist (see the module docstring); cannot encode new texts."""

    name = "precomputed"
    modality: Modality = "text"

    def __init__(
        self, path: str | Path | None = None, device: str | torch.device | None = None
    ) -> None:
        self._init(path)

    def encode(
        self, texts: Sequence[str], batch_size: int = 256, progress: bool = True
    ) -> np.ndarray:
        """Not available (``can_encode`` is ``False``): raises ``ValueError``."""
        raise self._refuse()


_INFO = EncoderInfo("the rows'", "none", "the dataset's own features or a .npy file")


@register_image_encoder("precomputed", _INFO)
def _precomputed_image(
    device: str | torch.device | None = None, path: str | Path | None = None
) -> PrecomputedImageEncoder:
    return PrecomputedImageEncoder(path=path, device=device)


@register_text_encoder("precomputed", _INFO)
def _precomputed_text(
    device: str | torch.device | None = None, path: str | Path | None = None
) -> PrecomputedTextEncoder:
    return PrecomputedTextEncoder(path=path, device=device)

"""How an index turns images and texts into embeddings (and a method's own hash codes).

Two kinds of model, recorded in the manifest so that queries and added items are encoded
exactly like the indexed ones:

* :class:`RunModel` — a trained run: the frozen encoders it was trained on, then the method's
  heads (``embed_image`` / ``embed_text``; ``hash_image`` / ``hash_text`` when the method has
  its own hash head). The run's ``config.json``, ``model.pt``, ``split.json`` (and a fitted text
  encoder's state, and the query bank of a run trained with query-bank normalisation) are
  copied into the index, which is therefore self-contained.
* :class:`DualEncoderModel` — a zero-shot dual encoder used as it is (``open_clip:<arch>`` with a
  local weights file, or any image and text encoders registered under one name with equal
  output sizes); embeddings are its L2-normalised outputs, no heads.

The manifest records the encoders' cache keys (and the weights file's digest): an index whose
encoders have changed since it was built raises :class:`IndexFormatError` instead of silently
mixing incompatible vectors.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from xmodal.datasets.record import Dataset
from xmodal.embedding import embed_features
from xmodal.encoders.base import (
    ImageEncoder,
    TextEncoder,
    file_digest,
    get_image_encoder,
    resolve_device,
)
from xmodal.encoders.dual import load_dual_encoder
from xmodal.index.manifest import IndexFormatError
from xmodal.querybank import QUERY_BANK_FILE

__all__ = [
    "DualEncoderModel",
    "Embedded",
    "ImageQuery",
    "IndexModel",
    "RunModel",
    "hash_features",
    "load_model",
]

#: An image query: a file path or an in-memory PIL image.
ImageQuery = str | Path | Image.Image

_RUN_FILES = (
    "config.json",
    "model.pt",
    "split.json",
    "text_encoder.state",
    QUERY_BANK_FILE,
    "checksums.json",
)


@dataclass(frozen=True)
class Embedded:
    """Embeddings of some rows, and the method's own codes for them when it has a hash head.

    Attributes:
        vectors: ``[n, d]`` float32 L2-normalised embeddings.
        head_codes: ``[n, bits]`` int8 ``{-1, +1}`` codes from the hash head, or ``None``.
    """

    vectors: np.ndarray
    head_codes: np.ndarray | None = None


@dataclass(frozen=True)
class EmbeddedDataset:
    """Embeddings of every record's image and every caption of a dataset."""

    dataset: Dataset
    image: Embedded
    text: Embedded
    text_to_image: np.ndarray


@torch.inference_mode()
def hash_features(
    method: Any,
    features: np.ndarray,
    modality: Literal["image", "text"],
    batch_size: int = 8192,
    device: torch.device | str | None = None,
) -> np.ndarray | None:
    """``{-1, +1}`` int8 codes from a method's own hash head, or ``None`` when it has none."""
    fn = method.hash_image if modality == "image" else method.hash_text
    dev = torch.device(device) if device is not None else torch.device("cpu")
    was_training = method.training
    method.eval()
    try:
        out = []
        for i in range(0, max(len(features), 1), batch_size):
            chunk = np.array(features[i : i + batch_size], dtype=np.float32)
            if len(chunk) == 0:
                dim = method.image_dim if modality == "image" else method.text_dim
                chunk = np.zeros((1, dim), dtype=np.float32)
                codes = fn(torch.from_numpy(chunk).to(dev))
                if codes is None:
                    return None
                return np.zeros((0, codes.shape[1]), dtype=np.int8)
            codes = fn(torch.from_numpy(chunk).to(dev))
            if codes is None:
                return None
            out.append(np.where(codes.float().cpu().numpy() >= 0, 1, -1).astype(np.int8))
        return np.concatenate(out)
    finally:
        method.train(was_training)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _is_image(q: Any) -> bool:
    return isinstance(q, str | Path | Image.Image)


def _encode_images(encoder: ImageEncoder, images: Sequence[ImageQuery]) -> np.ndarray:
    from xmodal.datasets.images import load_image

    if not encoder.can_encode:
        raise ValueError(f"this index's image encoder {encoder.name!r} cannot encode new images")
    pil = [im if isinstance(im, Image.Image) else load_image(Path(im)) for im in images]
    return encoder.encode(pil)


class IndexModel(ABC):
    """Encodes images and texts the way an index's rows were encoded (thread-safe: one lock
    per modality, so a slow image never holds up a text query)."""

    kind: str
    dim: int

    def __init__(self) -> None:
        self._text_lock, self._image_lock = threading.Lock(), threading.Lock()

    @abstractmethod
    def embed_dataset(
        self, dataset: Dataset, cache_dir: str | Path | None = None, progress: bool = True
    ) -> EmbeddedDataset:
        """Every record's image and every caption, through the feature cache."""

    @staticmethod
    def _cached_features(
        dataset: Dataset,
        image_encoder: ImageEncoder,
        text_encoder: TextEncoder,
        text_dim: int,
        cache_dir: str | Path | None,
        progress: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image features, text features, caption -> record)`` from the feature cache (no
        text rows when the data set has no captions), checked to hold one text row a caption."""
        from xmodal.features import FeatureCache, default_cache_dir

        cache = FeatureCache(cache_dir or default_cache_dir())
        image = cache.get_or_encode(dataset, image_encoder=image_encoder, progress=progress)
        _, owner = dataset.captions()
        text = (
            cache.get_or_encode(dataset, text_encoder=text_encoder, progress=progress)
            if len(owner)
            else np.zeros((0, text_dim), dtype=np.float32)
        )
        if len(text) != len(owner):
            raise ValueError(
                f"dataset {dataset.name!r} has {len(text)} text feature rows but {len(owner)} "
                "captions; indexes need one text row per caption"
            )
        return image, text, owner

    @abstractmethod
    def _embed_texts(self, texts: list[str]) -> Embedded: ...

    @abstractmethod
    def _embed_images(self, images: list[ImageQuery]) -> Embedded: ...

    def embed_texts(self, texts: Sequence[str]) -> Embedded:
        """Embed query or new texts."""
        texts = list(texts)
        bad = [t for t in texts if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(f"text queries must be non-empty strings, got {bad[0]!r}")
        with self._text_lock:
            return self._embed_texts(texts)

    def embed_images(self, images: Sequence[ImageQuery]) -> Embedded:
        """Embed query images (file paths or PIL images)."""
        images = list(images)
        bad = [im for im in images if not _is_image(im)]
        if bad:
            raise ValueError(
                f"image queries must be file paths or PIL images, got {type(bad[0]).__name__}"
            )
        with self._image_lock:
            return self._embed_images(images)

    def head_bits(self) -> int | None:
        """Code length of the method's own hash head, or ``None`` when it has none."""
        return None

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-able description for the manifest (``{"kind": ...}``)."""

    def files(self) -> dict[str, Path]:
        """Files to carry in the index, ``{relative name: source}``."""
        return {}


class RunModel(IndexModel):
    """A trained run's encoders and heads.

    Args:
        run_dir: A run directory written by ``xmodal train`` (or an index's ``model/`` copy).
        device: ``cpu``, ``cuda`` or ``None`` (auto).
        expect: The manifest's model spec; encoders whose keys differ raise ``IndexFormatError``.
    """

    kind = "run"

    def __init__(
        self, run_dir: str | Path, device: str | None = None, expect: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        from xmodal.training.loaded import LoadedRun

        self.run_dir = Path(run_dir)
        self.run = LoadedRun.open(self.run_dir, device)
        self.method = self.run.method
        self.dim = int(self.method.config.embed_dim)
        self.expect = expect or {}
        self._image_encoder: ImageEncoder | None = None
        self._check_key("text_encoder_key", self.run.text_encoder)

    def _check_key(self, field: str, encoder: ImageEncoder | TextEncoder) -> None:
        want = self.expect.get(field)
        if want is not None and encoder.key != want:
            raise IndexFormatError(
                self.run_dir,
                f"the index was built with encoder {want!r}, but {encoder.key!r} is installed "
                "now; rebuild the index",
            )

    @property
    def image_encoder(self) -> ImageEncoder:
        """The run's frozen image encoder (built on first use)."""
        if self._image_encoder is None:
            enc = get_image_encoder(self.run.config.image_encoder, device=self.run.device)
            self._check_key("image_encoder_key", enc)
            self._image_encoder = enc
        return self._image_encoder

    def _embed(self, features: np.ndarray, modality: Literal["image", "text"]) -> Embedded:
        vectors = embed_features(self.method, features, modality, device=self.run.device)
        codes = hash_features(self.method, features, modality, device=self.run.device)
        return Embedded(vectors.astype(np.float32, copy=False), codes)

    def embed_dataset(
        self, dataset: Dataset, cache_dir: str | Path | None = None, progress: bool = True
    ) -> EmbeddedDataset:
        image, text, owner = self._cached_features(
            dataset, self.image_encoder, self.run.text_encoder, self.run.config.text_dim,
            cache_dir, progress,
        )  # fmt: skip
        return EmbeddedDataset(
            dataset, self._embed(image, "image"), self._embed(text, "text"), owner
        )

    def _embed_texts(self, texts: list[str]) -> Embedded:
        encoder = self.run.text_encoder
        if not encoder.can_encode:
            raise ValueError(f"this index's text encoder {encoder.name!r} cannot encode new texts")
        features = encoder.encode(texts, progress=False)
        return self._embed(features, "text")

    def _embed_images(self, images: list[ImageQuery]) -> Embedded:
        return self._embed(_encode_images(self.image_encoder, images), "image")

    def embed_features(self, features: np.ndarray, modality: Literal["image", "text"]) -> Embedded:
        """Embed frozen encoder features (e.g. from the feature cache)."""
        return self._embed(np.asarray(features, dtype=np.float32), modality)

    def head_bits(self) -> int | None:
        if not hasattr(self, "_head_bits"):
            codes = hash_features(
                self.method,
                np.zeros((1, self.run.config.image_dim), np.float32),
                "image",
                device=self.run.device,
            )
            self._head_bits = None if codes is None else int(codes.shape[1])
        return self._head_bits

    def spec(self) -> dict[str, Any]:
        cfg = self.run.config
        return {
            "kind": "run",
            "dir": "model",
            "method": cfg.method,
            "image_encoder": cfg.image_encoder,
            "text_encoder": cfg.text_encoder,
            "image_encoder_key": self.image_encoder.key,
            "text_encoder_key": self.run.text_encoder.key,
            "run_dir": str(self.run_dir.resolve()),
        }

    def files(self) -> dict[str, Path]:
        return {
            f"model/{name}": self.run_dir / name
            for name in _RUN_FILES
            if (self.run_dir / name).is_file()
        }


class DualEncoderModel(IndexModel):
    """A zero-shot dual encoder used as it is.

    Args:
        encoder: ``open_clip:<arch>`` or any name registered as both an image and a text
            encoder (their outputs must have one size).
        weights: Local weights file passed to the encoders (``open_clip`` needs one for
            meaningful results).
        device: ``cpu``, ``cuda`` or ``None`` (auto).
        expect: The manifest's model spec; a changed weights file or encoder raises
            ``IndexFormatError``.
    """

    kind = "dual"

    def __init__(
        self,
        encoder: str,
        weights: str | Path | None = None,
        device: str | None = None,
        expect: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.weights = Path(weights).resolve() if weights is not None else None
        if self.weights is not None and not self.weights.is_file():
            raise ValueError(f"weights file not found: {weights}")
        expect = expect or {}
        if expect.get("weights_digest") and self.weights is not None:
            digest = file_digest(self.weights)
            if digest != expect["weights_digest"]:
                raise IndexFormatError(
                    self.weights,
                    "weights file differs from the one the index was built with (digest "
                    f"{digest} vs {expect['weights_digest']}); rebuild the index",
                )
        dev = resolve_device(device)
        self.image_encoder: ImageEncoder
        self.text_encoder: TextEncoder
        self.image_encoder, self.text_encoder = load_dual_encoder(encoder, self.weights, dev)
        for field, enc in (
            ("image_encoder_key", self.image_encoder),
            ("text_encoder_key", self.text_encoder),
        ):
            if expect.get(field) is not None and enc.key != expect[field]:
                raise IndexFormatError(
                    self.weights or Path(encoder),
                    f"encoder key {enc.key!r} differs from the index's {expect[field]!r}; "
                    "rebuild the index",
                )
        self.dim = int(self.image_encoder.dim)

    def embed_dataset(
        self, dataset: Dataset, cache_dir: str | Path | None = None, progress: bool = True
    ) -> EmbeddedDataset:
        image, text, owner = self._cached_features(
            dataset, self.image_encoder, self.text_encoder, self.dim, cache_dir, progress
        )
        return EmbeddedDataset(
            dataset, Embedded(_normalise(image)), Embedded(_normalise(text)), owner
        )

    def _embed_texts(self, texts: list[str]) -> Embedded:
        return Embedded(_normalise(self.text_encoder.encode(texts, progress=False)))

    def _embed_images(self, images: list[ImageQuery]) -> Embedded:
        return Embedded(_normalise(_encode_images(self.image_encoder, images)))

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "dual",
            "encoder": self.encoder,
            "weights": str(self.weights) if self.weights is not None else None,
            "weights_digest": file_digest(self.weights) if self.weights is not None else None,
            "image_encoder_key": self.image_encoder.key,
            "text_encoder_key": self.text_encoder.key,
        }


def load_model(spec: dict[str, Any], folder: Path, device: str | None = None) -> IndexModel:
    """The model a manifest describes (``folder`` is the version folder holding ``model/``).

    Raises:
        ValueError: the index was built from arrays only (``{"kind": "none"}``): it has no model
            to encode text or images; query it with vectors.
        IndexFormatError: the encoders or weights differ from the ones it was built with.
    """
    kind = spec.get("kind")
    if kind == "run":
        return RunModel(folder / spec.get("dir", "model"), device, expect=spec)
    if kind == "dual":
        return DualEncoderModel(spec["encoder"], spec.get("weights"), device, expect=spec)
    raise ValueError(
        "this index was built from precomputed vectors and has no model to encode texts or "
        "images; query it with vectors (and codes)"
    )

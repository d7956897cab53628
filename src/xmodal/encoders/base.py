"""Encoder interfaces and the name registry.

An encoder is frozen: it maps images or texts to feature vectors and is never trained by xmodal's
heads (fine-tuning is a trainer option). Encoders are found by name::

    enc = get_image_encoder("efficientnet-lite0")
    txt = get_text_encoder("minilm")
    clip = get_image_encoder("open_clip:ViT-B-32", weights="ViT-B-32.pt")

Names with a ``family:variant`` form dispatch on the family (``open_clip``, ``timm``): the factory
registered as ``"family:*"`` receives ``variant=``. Each implementation module registers itself with
:func:`register_image_encoder` / :func:`register_text_encoder`; importing :mod:`xmodal.encoders` is
cheap because those modules import their heavy libraries (sentence-transformers, open_clip, timm)
only when an encoder is built.
"""

from __future__ import annotations

import fnmatch
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from xmodal.datasets.images import to_rgb

__all__ = [
    "EncoderInfo",
    "ImageEncoder",
    "TextEncoder",
    "check_encoder_name",
    "check_texts",
    "describe_encoders",
    "file_digest",
    "get_image_encoder",
    "get_text_encoder",
    "list_encoders",
    "register_image_encoder",
    "register_text_encoder",
    "resolve_device",
    "set_encoder_info",
]

ImageFactory = Callable[..., "ImageEncoder"]
TextFactory = Callable[..., "TextEncoder"]

_IMAGE_ENCODERS: dict[str, ImageFactory] = {}
_TEXT_ENCODERS: dict[str, TextFactory] = {}


@dataclass(frozen=True)
class EncoderInfo:
    """What ``xmodal list`` says about a registered encoder without building it.

    Attributes:
        dim: Feature size, or how it is decided (e.g. ``"the model's"``).
        runtime: ``"onnx"``, ``"torch"``, ``"numpy"``; ``"auto"`` means ONNX Runtime where it is
            installed, else torch.
        weights: Where the weights come from: ``"packaged"``, ``"HF hub id or local folder"``,
            ``"fitted on training texts"``, ...
    """

    dim: int | str = "?"
    runtime: str = "torch"
    weights: str = "?"


_INFO: dict[tuple[str, str], EncoderInfo] = {}


class ImageEncoder(ABC):
    """Frozen image backbone: PIL image -> tensor (``preprocess``) -> features (``forward``).

    ``preprocess`` runs in data-loader workers (CPU, per image); ``forward`` runs batched on
    ``device``. ``key`` identifies weights and preprocessing, for the feature cache. Batched
    encoding of files is :func:`xmodal.encoders.encode_images`.
    """

    name: str
    dim: int
    device: torch.device

    @property
    def key(self) -> str:
        """Cache key: changes when weights or preprocessing change."""
        return self.name

    #: Where the forward pass runs: ``"onnx"`` (ONNX Runtime) or ``"torch"``.
    runtime: str = "torch"
    #: Where the weights come from, for people (``xmodal list``): ``"packaged"``, a hub id, a file.
    weights_source: str = "packaged"

    @property
    def can_encode(self) -> bool:
        """Whether this encoder can encode new images (``False`` for precomputed features).

        Callers ask before encoding a query or a new collection; an encoder that cannot encode
        raises ``ValueError`` from ``preprocess``/``forward``/``encode``.
        """
        return True

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The per-image preprocessing as a picklable callable (sent to data-loader workers).

        The default is the bound :meth:`preprocess`; encoders holding a large model override it
        with a small standalone object so that workers started by ``spawn`` need not pickle the
        model.
        """
        return self.preprocess

    @abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB PIL image -> a ``[3, H, W]`` tensor ready for ``forward``.

        The tensor may be ``uint8`` when ``forward`` normalises on the device (4x less data
        between workers and the model, and on to the GPU); otherwise float.
        """

    @abstractmethod
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """A ``[B, 3, H, W]`` batch (on any device) -> ``[B, dim]`` float features."""

    def encode(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Encode in-memory RGB images (e.g. a query upload) into ``[n, dim]`` float32."""
        out = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = torch.stack([self.preprocess(to_rgb(im)) for im in chunk])
            out.append(self.forward(batch).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self.key!r}, dim={self.dim}, device={self.device})"


class TextEncoder(ABC):
    """Frozen text encoder: list of strings -> ``[n, dim]`` float32 features."""

    name: str
    dim: int
    #: Where the forward pass runs: ``"onnx"`` (ONNX Runtime), ``"torch"`` or ``"numpy"``.
    runtime: str = "torch"
    #: Where the weights come from, for people (``xmodal list``): ``"packaged"``, a hub id, a file,
    #: ``"fitted"``.
    weights_source: str = "packaged"

    @property
    def key(self) -> str:
        """Cache key: changes when weights or preprocessing change."""
        return self.name

    @property
    def can_encode(self) -> bool:
        """Whether this encoder can encode new texts (``False`` for precomputed features).

        Callers ask before encoding (a fitted-first encoder also needs :attr:`is_fitted`).
        """
        return True

    @property
    def needs_fit(self) -> bool:
        """Whether ``fit`` must be called on training texts first (e.g. ``tfidf``)."""
        return False

    @property
    def is_fitted(self) -> bool:
        """Whether the encoder is ready to ``encode`` (always true for pretrained models)."""
        return True

    def fit(self, texts: Sequence[str]) -> TextEncoder:
        """Learn a vocabulary or statistics from training texts (no-op for pretrained models)."""
        return self

    @abstractmethod
    def encode(
        self, texts: Sequence[str], batch_size: int = 256, progress: bool = True
    ) -> np.ndarray:
        """Encode ``texts`` into a ``[len(texts), dim]`` float32 array."""

    def __repr__(self) -> str:
        key = self.key if self.is_fitted else f"{self.name} (not fitted)"
        return f"{type(self).__name__}(key={key!r}, dim={self.dim})"


def register_image_encoder(
    name: str, info: EncoderInfo | None = None
) -> Callable[[ImageFactory], ImageFactory]:
    """Decorator registering an image-encoder factory under ``name`` (``"family:*"`` for families).

    The factory is called as ``factory(device=..., **kwargs)`` (plus ``variant=`` for families);
    ``info`` is what :func:`describe_encoders` reports.
    """

    def deco(fn: ImageFactory) -> ImageFactory:
        _IMAGE_ENCODERS[name] = fn
        if info is not None:
            _INFO["image", name] = info
        return fn

    return deco


def register_text_encoder(
    name: str, info: EncoderInfo | None = None
) -> Callable[[TextFactory], TextFactory]:
    """Decorator registering a text-encoder factory under ``name`` (``"family:*"`` for families)."""

    def deco(fn: TextFactory) -> TextFactory:
        _TEXT_ENCODERS[name] = fn
        if info is not None:
            _INFO["text", name] = info
        return fn

    return deco


def set_encoder_info(modality: str, name: str, info: EncoderInfo) -> None:
    """Attach :class:`EncoderInfo` to an encoder registered without it."""
    _INFO[modality, name] = info


def describe_encoders(pattern: str = "*") -> dict[str, list[tuple[str, EncoderInfo]]]:
    """Registered encoders matching ``pattern`` with their :class:`EncoderInfo`, by modality.

    ``runtime="auto"`` is resolved to ``"onnx"`` where ONNX Runtime is installed, else
    ``"torch"`` (for the CPU; on a GPU the CUDA execution provider decides).
    """
    from xmodal.encoders.onnx_runtime import onnx_available

    auto = "onnx" if onnx_available() else "torch"
    out: dict[str, list[tuple[str, EncoderInfo]]] = {}
    for modality, names in list_encoders(pattern).items():
        rows = []
        for name in names:
            info = _INFO.get((modality, name), EncoderInfo())
            if info.runtime == "auto":
                info = EncoderInfo(info.dim, auto, info.weights)
            rows.append((name, info))
        out[modality] = rows
    return out


def _load_builtin() -> None:
    # Importing the implementation modules runs their @register_* decorators.
    import xmodal.encoders._builtin  # noqa: F401


def _lookup(
    name: str, table: dict[str, Callable[..., Any]], kind: str
) -> tuple[Callable[..., Any], dict]:
    if name in table:
        return table[name], {}
    family, sep, variant = name.partition(":")
    if sep and f"{family}:*" in table:
        if not variant:
            raise ValueError(f"{kind} encoder name {name!r} lacks a variant after {family!r}:")
        return table[f"{family}:*"], {"variant": variant}
    known = ", ".join(sorted(table))
    raise ValueError(f"unknown {kind} encoder {name!r}; known: {known}")


def check_encoder_name(modality: str, name: str) -> None:
    """Check that ``name`` resolves to a registered ``"image"`` or ``"text"`` encoder, without
    building it (nothing is loaded).

    Raises:
        ValueError: unknown modality or name (the message lists the known names).
    """
    from xmodal.encoders.concat import part_names

    tables: dict[str, dict[str, Callable[..., Any]]] = {
        "image": _IMAGE_ENCODERS,
        "text": _TEXT_ENCODERS,
    }
    if modality not in tables:
        raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")
    _load_builtin()
    parts = part_names(name) if modality == "image" else None
    for part in parts or [name]:
        _lookup(part, tables[modality], modality)


def get_image_encoder(
    name: str, device: str | torch.device | None = None, **kwargs: Any
) -> ImageEncoder:
    """Build the image encoder registered as ``name`` (``family:variant`` dispatches on family).

    ``A+B`` (two or more names joined by ``+``) builds each part with the same ``device`` and
    ``kwargs`` and concatenates their unit-length features
    (:class:`~xmodal.encoders.concat.ConcatImageEncoder`).
    """
    from xmodal.encoders.concat import ConcatImageEncoder, part_names

    parts = part_names(name)
    if parts is not None:
        return ConcatImageEncoder([get_image_encoder(p, device, **kwargs) for p in parts])
    _load_builtin()
    factory, extra = _lookup(name, _IMAGE_ENCODERS, "image")
    return factory(device=device, **extra, **kwargs)


def get_text_encoder(
    name: str, device: str | torch.device | None = None, **kwargs: Any
) -> TextEncoder:
    """Build the text encoder registered as ``name`` (``family:variant`` dispatches on family)."""
    _load_builtin()
    factory, extra = _lookup(name, _TEXT_ENCODERS, "text")
    return factory(device=device, **extra, **kwargs)


def list_encoders(pattern: str = "*") -> dict[str, list[str]]:
    """Registered encoder names matching a shell-style ``pattern``, by modality."""
    _load_builtin()
    return {
        "image": sorted(n for n in _IMAGE_ENCODERS if fnmatch.fnmatch(n, pattern)),
        "text": sorted(n for n in _TEXT_ENCODERS if fnmatch.fnmatch(n, pattern)),
    }


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list, or ``ValueError`` naming the first item that is not a string."""
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, got a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ValueError(f"texts[{i}] is {type(t).__name__}, not str: {t!r}")
    return out


def file_digest(path: str | Path, length: int = 12, sample: int = 1 << 20) -> str:
    """A short content hash of a weights file, for cache keys.

    Files up to ``2 * sample`` bytes are hashed whole; larger ones by their size plus their first
    and last ``sample`` bytes (a multi-GB checkpoint then costs milliseconds, and any re-export or
    different checkpoint still changes the digest).
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        if size <= 2 * sample:
            h.update(f.read())
        else:
            h.update(f.read(sample))
            f.seek(size - sample)
            h.update(f.read(sample))
    return h.hexdigest()[:length]

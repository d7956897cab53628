"""Batched image encoding: data-loader workers decode and preprocess while the model runs.

Workers read each file's bytes once, hash them (:func:`content_digest`, the row's identity in the
feature cache) and decode those same bytes with :func:`xmodal.datasets.images.load_image` (so a
bad file is named in the error), then apply the encoder's picklable ``transform``; the main
process moves each batch to the encoder's device and runs ``forward``. Decoding of batch ``i + 1``
therefore overlaps the forward pass of batch ``i``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate
from torch.utils.data import Dataset as TorchDataset
from tqdm.auto import tqdm

from xmodal.datasets.images import load_image
from xmodal.encoders.base import ImageEncoder
from xmodal.errors import BadInputError

__all__ = [
    "DIGEST_SIZE",
    "ImageBatch",
    "ImageFiles",
    "content_digest",
    "default_num_workers",
    "encode_images",
    "image_loader",
    "iter_image_features",
    "iter_image_rows",
]

#: Bytes of :func:`content_digest` (BLAKE2b-128).
DIGEST_SIZE = 16


def content_digest(data: bytes) -> bytes:
    """The content hash of an image file's bytes: BLAKE2b with a 16-byte digest."""
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).digest()


def default_num_workers() -> int:
    """``min(4, number of CPUs)``."""
    return min(4, os.cpu_count() or 1)


class _Loaded(NamedTuple):
    position: int
    tensor: torch.Tensor | None
    error: tuple[str, str] | None  # (path, reason) when the file could not be used
    digest: bytes = b""


class ImageBatch(NamedTuple):
    """One collated batch: row indices, the stacked tensor, any unreadable files, and the
    :func:`content_digest` of each file."""

    indices: list[int]
    tensor: torch.Tensor | None
    errors: list[tuple[str, str]]
    digests: list[bytes]


class ImageFiles(TorchDataset):
    """Image files -> preprocessed tensors; a bad file is reported, not raised, in the worker.

    (Exceptions raised in a worker come back as ``RuntimeError`` with the type lost, so the
    error travels as data and :func:`iter_image_features` re-raises a proper ``BadInputError``.)
    """

    def __init__(
        self, paths: Sequence[str | Path], transform: Callable[[Image.Image], torch.Tensor]
    ):
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> _Loaded:
        path = self.paths[i]
        try:
            try:
                data = path.read_bytes()
            except OSError as e:
                reason = "image file not found" if not path.exists() else f"unreadable ({e})"
                raise BadInputError(path, reason) from e
            image = load_image(path, data=data)
            return _Loaded(i, self.transform(image), None, content_digest(data))
        except BadInputError as e:
            return _Loaded(i, None, (str(e.path), e.reason))


def _collate(items: list[_Loaded]) -> ImageBatch:
    errors = [it.error for it in items if it.error is not None]
    indices = [it.position for it in items]
    digests = [it.digest for it in items]
    if errors:
        return ImageBatch(indices, None, errors, digests)
    # default_collate stacks straight into shared memory inside workers (no extra copy on send).
    return ImageBatch(indices, default_collate([it.tensor for it in items]), [], digests)


def image_loader(
    encoder: ImageEncoder,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    num_workers: int | None = None,
    prefetch_factor: int = 2,
) -> DataLoader:
    """The ordered :class:`~torch.utils.data.DataLoader` that :func:`iter_image_features` consumes.

    ``num_workers`` defaults to :func:`default_num_workers` and is capped at the number of
    batches; a single batch is decoded in this process (a worker could overlap nothing with it
    and would only add a fork of a process that may be running threads). Memory is pinned when
    the encoder runs on CUDA; workers are not persistent.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    workers = default_num_workers() if num_workers is None else num_workers
    if workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    batches = -(-len(paths) // batch_size)
    workers = min(workers, batches) if batches > 1 else 0
    return DataLoader(
        ImageFiles(paths, encoder.transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=encoder.device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=prefetch_factor if workers > 0 else None,
    )


def iter_image_rows(
    encoder: ImageEncoder,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``([b, dim] float32 features, [b, DIGEST_SIZE] uint8 content digests)`` per batch.

    The digests are :func:`content_digest` of the very bytes that were decoded, so a row's
    features and its digest always describe the same file content.

    Raises:
        BadInputError: an image is missing, unreadable or too large (the error names the file).
    """
    loader = image_loader(encoder, paths, batch_size=batch_size, num_workers=num_workers)
    with tqdm(total=len(paths), unit="img", desc=desc or encoder.name, disable=not progress) as bar:
        for batch in loader:
            if batch.errors:
                path, reason = batch.errors[0]
                raise BadInputError(path, reason)
            assert batch.tensor is not None
            feats = encoder.forward(batch.tensor)
            digests = np.frombuffer(b"".join(batch.digests), dtype=np.uint8)
            yield feats.float().cpu().numpy(), digests.reshape(len(batch.indices), DIGEST_SIZE)
            bar.update(len(batch.indices))


def iter_image_features(
    encoder: ImageEncoder,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> Iterator[np.ndarray]:
    """Yield ``[b, dim]`` float32 feature blocks for ``paths``, in order, one per batch.

    Raises:
        BadInputError: an image is missing, unreadable or too large (the error names the file).
    """
    for feats, _ in iter_image_rows(encoder, paths, batch_size, num_workers, progress, desc):
        yield feats


def encode_images(
    encoder: ImageEncoder,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Encode image files into a ``[len(paths), encoder.dim]`` float32 array (row order = paths).

    Args:
        encoder: A frozen image encoder (its ``device`` decides where ``forward`` runs).
        paths: Image files; each is decoded with :func:`xmodal.datasets.images.load_image`.
        batch_size: Images per forward pass.
        num_workers: Data-loader worker processes (default ``min(4, cpu count)``; 0 decodes in
            this process).
        progress: Show a progress bar.

    Raises:
        BadInputError: an image is missing, unreadable or too large (the error names the file).
    """
    blocks = [np.zeros((0, encoder.dim), dtype=np.float32)]
    blocks.extend(iter_image_features(encoder, paths, batch_size, num_workers, progress))
    return np.concatenate(blocks).astype(np.float32, copy=False)

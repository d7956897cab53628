"""Paired (and optionally unpaired) frozen features as the trainer consumes them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from xmodal.methods.base import Batch, TrainingData

__all__ = ["PairedFeatures", "UnpairedFeatures", "iterate_batches"]


def _tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)


@dataclass(frozen=True)
class UnpairedFeatures:
    """Frozen features of a target domain whose images and texts are not paired.

    Attributes:
        image: ``[n_images, d_image]`` image features (same encoder as the paired data).
        text: ``[n_texts, d_text]`` text features (same encoder as the paired data).
    """

    image: np.ndarray
    text: np.ndarray

    def __post_init__(self) -> None:
        for name in ("image", "text"):
            x = getattr(self, name)
            if np.ndim(x) != 2 or len(x) == 0:
                raise ValueError(
                    f"unpaired {name} must be a non-empty 2-D array, got shape {np.shape(x)}"
                )


@dataclass(frozen=True)
class PairedFeatures:
    """Frozen features of one split: images, their captions, and optional labels.

    Attributes:
        image: ``[n_images, d_image]`` image features.
        text: ``[n_texts, d_text]`` caption features.
        text_to_image: ``[n_texts]`` index of each caption's image.
        labels: Optional ``[n_images, n_labels]`` boolean label matrix.
        image_extra: Further per-image arrays by name (first dimension ``n_images``), e.g. the
            features of a teacher encoder; training batches carry their rows in ``Batch.extra``.
        text_extra: Further per-text arrays by name (first dimension ``n_texts``); names must
            differ from those of ``image_extra``.
    """

    image: np.ndarray
    text: np.ndarray
    text_to_image: np.ndarray
    labels: np.ndarray | None = None
    image_extra: Mapping[str, np.ndarray] = field(default_factory=dict)
    text_extra: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.text.shape[0] != self.text_to_image.shape[0]:
            raise ValueError(
                f"{self.text.shape[0]} text rows but {self.text_to_image.shape[0]} text_to_image entries"
            )
        if self.text_to_image.size and (
            self.text_to_image.min() < 0 or self.text_to_image.max() >= self.image.shape[0]
        ):
            raise ValueError("text_to_image points outside the image rows")
        if self.labels is not None and self.labels.shape[0] != self.image.shape[0]:
            raise ValueError(f"{self.labels.shape[0]} label rows for {self.image.shape[0]} images")
        for kind, extra, n in (
            ("image_extra", self.image_extra, self.n_images),
            ("text_extra", self.text_extra, self.n_texts),
        ):
            for name, values in extra.items():
                if np.ndim(values) < 1 or len(values) != n:
                    raise ValueError(
                        f"{kind}[{name!r}] has shape {np.shape(values)}; needs {n} rows"
                    )
        both = sorted(set(self.image_extra) & set(self.text_extra))
        if both:
            raise ValueError(f"names {both} are in both image_extra and text_extra")

    @property
    def n_images(self) -> int:
        return int(self.image.shape[0])

    @property
    def n_texts(self) -> int:
        return int(self.text.shape[0])

    def to_training_data(
        self, device: torch.device, unpaired: UnpairedFeatures | None = None
    ) -> TrainingData:
        """Tensors on ``device`` for :meth:`Method.prepare`, :meth:`Method.fit` and batching.

        ``unpaired`` target-domain features become ``target_image_features`` and
        ``target_text_features``; their feature sizes must match the paired ones.
        """
        if unpaired is not None:
            for name, ours, theirs in (
                ("image", self.image, unpaired.image),
                ("text", self.text, unpaired.text),
            ):
                if theirs.shape[1] != ours.shape[1]:
                    raise ValueError(
                        f"unpaired {name} features have {theirs.shape[1]} dims, "
                        f"the paired ones {ours.shape[1]}"
                    )
        return TrainingData(
            image_features=_tensor(self.image, device),
            text_features=_tensor(self.text, device),
            text_to_image=torch.as_tensor(self.text_to_image, dtype=torch.long, device=device),
            labels=None if self.labels is None else _tensor(self.labels, device),
            image_extra={k: _tensor(v, device) for k, v in self.image_extra.items()},
            text_extra={k: _tensor(v, device) for k, v in self.text_extra.items()},
            target_image_features=None if unpaired is None else _tensor(unpaired.image, device),
            target_text_features=None if unpaired is None else _tensor(unpaired.text, device),
        )


def _sample_rows(x: torch.Tensor | None, n: int, generator: torch.Generator) -> torch.Tensor | None:
    """``min(n, len(x))`` distinct random rows of ``x``."""
    if x is None:
        return None
    pick = torch.randperm(x.shape[0], generator=generator)[:n].to(x.device)
    return x[pick]


def iterate_batches(
    data: TrainingData,
    batch_size: int,
    generator: torch.Generator,
    target_generator: torch.Generator | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[Batch]:
    """One epoch of shuffled caption batches (the last partial batch is dropped if smaller than 2).

    With ``world_size > 1`` (DDP) every process draws the same order (same seed) and takes the
    ``rank``-th slice of each global batch of ``world_size · batch_size`` captions; a last global
    batch smaller than that is dropped, so every process sees equal shapes.

    Each batch carries the rows of ``data.image_extra`` / ``data.text_extra`` in ``extra``. When
    ``data`` holds unpaired target features, every batch also gets as many distinct random target
    images and texts as it has captions (all of them when there are fewer), drawn with
    ``target_generator`` (default ``generator``); a separate generator leaves the caption order
    exactly as it is without target data.
    """
    n = data.text_features.shape[0]
    order = torch.randperm(n, generator=generator).to(data.text_features.device)
    target_gen = generator if target_generator is None else target_generator
    step = batch_size * world_size
    for start in range(0, n, step):
        idx = order[start : start + step]
        if world_size > 1:
            if idx.numel() < step:
                break
            idx = idx[rank * batch_size : (rank + 1) * batch_size]
        if idx.numel() < 2:
            break
        img_idx = data.text_to_image[idx]
        extra = {k: v[img_idx] for k, v in data.image_extra.items()}
        extra.update({k: v[idx] for k, v in data.text_extra.items()})
        yield Batch(
            image=data.image_features[img_idx],
            text=data.text_features[idx],
            image_index=img_idx,
            text_index=idx,
            labels=None if data.labels is None else data.labels[img_idx],
            extra=extra,
            target_image=_sample_rows(data.target_image_features, idx.numel(), target_gen),
            target_text=_sample_rows(data.target_text_features, idx.numel(), target_gen),
        )

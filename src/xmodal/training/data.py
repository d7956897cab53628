"""Paired frozen features as the trainer consumes them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from xmodal.methods.base import Batch, TrainingData

__all__ = ["PairedFeatures", "iterate_batches"]


@dataclass(frozen=True)
class PairedFeatures:
    """Frozen features of one split: images, their captions, and optional labels.

    Attributes:
        image: ``[n_images, d_image]`` image features.
        text: ``[n_texts, d_text]`` caption features.
        text_to_image: ``[n_texts]`` index of each caption's image.
        labels: Optional ``[n_images, n_labels]`` boolean label matrix.
    """

    image: np.ndarray
    text: np.ndarray
    text_to_image: np.ndarray
    labels: np.ndarray | None = None

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

    @property
    def n_images(self) -> int:
        return int(self.image.shape[0])

    @property
    def n_texts(self) -> int:
        return int(self.text.shape[0])

    def to_training_data(self, device: torch.device) -> TrainingData:
        """Tensors on ``device`` for :meth:`Method.prepare` and :meth:`Method.fit`."""
        return TrainingData(
            image_features=torch.as_tensor(np.asarray(self.image, dtype=np.float32), device=device),
            text_features=torch.as_tensor(np.asarray(self.text, dtype=np.float32), device=device),
            text_to_image=torch.as_tensor(self.text_to_image, dtype=torch.long, device=device),
            labels=None
            if self.labels is None
            else torch.as_tensor(self.labels, dtype=torch.float32, device=device),
        )


def iterate_batches(
    data: TrainingData, batch_size: int, generator: torch.Generator
) -> Iterator[Batch]:
    """One epoch of shuffled caption batches (the last partial batch is dropped if smaller than 2)."""
    n = data.text_features.shape[0]
    order = torch.randperm(n, generator=generator).to(data.text_features.device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if idx.numel() < 2:
            break
        img_idx = data.text_to_image[idx]
        yield Batch(
            image=data.image_features[img_idx],
            text=data.text_features[idx],
            image_index=img_idx,
            text_index=idx,
            labels=None if data.labels is None else data.labels[img_idx],
        )

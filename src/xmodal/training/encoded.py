"""A dataset with the frozen features of every record and caption, read through the cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xmodal.datasets import Dataset
from xmodal.encoders import get_image_encoder, get_text_encoder
from xmodal.encoders.base import TextEncoder, resolve_device
from xmodal.features import FeatureCache, default_cache_dir
from xmodal.training.data import PairedFeatures

__all__ = ["TEXT_ENCODER_STATE", "EncodedDataset", "encode_dataset", "run_text_encoder"]

#: File of a run (or index model) holding a fitted text encoder's state.
TEXT_ENCODER_STATE = "text_encoder.state"


@dataclass(frozen=True)
class EncodedDataset:
    """A dataset with frozen features for every record and caption.

    Attributes:
        dataset: The records.
        image: ``[n_records, d_image]`` features.
        text: ``[n_captions, d_text]`` features, captions in ``Dataset.captions()`` order.
        text_to_image: ``[n_captions]`` record index of each caption.
    """

    dataset: Dataset
    image: np.ndarray
    text: np.ndarray
    text_to_image: np.ndarray

    def paired(self, ids: list[str]) -> PairedFeatures:
        """The features of the records with ``ids`` (and their captions), re-indexed from 0."""
        position = {rid: i for i, rid in enumerate(self.dataset.ids)}
        missing = [i for i in ids if i not in position]
        if missing:
            raise ValueError(f"{len(missing)} split ids are not in the dataset, e.g. {missing[:3]}")
        rows = np.asarray([position[i] for i in ids], dtype=np.int64)
        new_index = np.full(len(self.dataset), -1, dtype=np.int64)
        new_index[rows] = np.arange(len(rows))
        keep = new_index[self.text_to_image] >= 0
        labels = None
        if self.dataset.has_labels:
            labels = self.dataset.label_matrix()[rows]
        return PairedFeatures(
            image=np.asarray(self.image[rows], dtype=np.float32),
            text=np.asarray(self.text[keep], dtype=np.float32),
            text_to_image=new_index[self.text_to_image[keep]],
            labels=labels,
        )


def run_text_encoder(name: str, run_dir: Path | None, device: torch.device) -> TextEncoder:
    encoder = get_text_encoder(name, device=device)
    state = run_dir / TEXT_ENCODER_STATE if run_dir is not None else None
    if encoder.needs_fit and state is not None and state.is_file():
        encoder = type(encoder).load(state)  # type: ignore[attr-defined]
    return encoder


def encode_dataset(
    dataset: Dataset,
    image_encoder: str = "efficientnet-lite0",
    text_encoder: str | TextEncoder = "minilm",
    cache_dir: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
) -> EncodedDataset:
    """Frozen features of every image and caption of ``dataset``, through the feature cache."""
    dev = resolve_device(device)
    cache = FeatureCache(cache_dir or default_cache_dir())
    image_enc = get_image_encoder(image_encoder, device=dev)
    text_enc = (
        get_text_encoder(text_encoder, device=dev)
        if isinstance(text_encoder, str)
        else text_encoder
    )
    image = cache.get_or_encode(dataset, image_encoder=image_enc, progress=progress)
    text = cache.get_or_encode(dataset, text_encoder=text_enc, progress=progress)
    _, owner = dataset.captions()
    return EncodedDataset(dataset, image, text, owner)

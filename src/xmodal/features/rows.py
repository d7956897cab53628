"""What each row of a cached feature array stands for."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xmodal.datasets.record import Dataset

__all__ = ["image_paths", "text_rows"]


def image_paths(dataset: Dataset) -> list[Path]:
    """One image file per record, in record order.

    Raises:
        ValueError: a record has no image file (a feature-only dataset: use its precomputed
            ``image_features`` instead).
    """
    missing = [r.id for r in dataset.records if r.image is None]
    if missing:
        raise ValueError(
            f"dataset {dataset.name!r}: {len(missing)} record(s) have no image file "
            f"(first: {missing[0]!r}); use the precomputed image features instead"
        )
    return [r.image for r in dataset.records if r.image is not None]


def text_rows(dataset: Dataset) -> tuple[list[str], np.ndarray]:
    """The texts of the text rows (``Dataset.captions()``: flattened captions) and their records."""
    return dataset.captions()

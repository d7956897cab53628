"""The one record type every reader produces, and the in-memory dataset built from records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Dataset", "Record"]


@dataclass(frozen=True)
class Record:
    """One item of an image–text collection.

    Attributes:
        id: Stable, unique identifier (usually the image file name relative to the data root).
        image: Path of the image file, or ``None`` for feature-only collections (``.mat``/``.h5``).
        captions: Zero or more captions; every caption describes this image.
        labels: Zero or more semantic labels (multi-label relevance for mAP).
        extra: Reader-specific fields kept for display (tags, hexcode, ...).
    """

    id: str
    image: Path | None
    captions: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Dataset:
    """An ordered collection of records, plus optional precomputed features.

    Attributes:
        name: Short name (for run directories and caches).
        root: Folder the collection was read from.
        records: The records, in a deterministic order (sorted by id unless the reader says
            otherwise).
        image_features: Optional ``[n_records, d]`` precomputed image features (``.mat``/``.h5``).
        text_features: Optional ``[n_records, d]`` precomputed text features (e.g. tag vectors).
        skipped: Number of bad inputs skipped while reading (``on_bad="skip"``), with reasons.
    """

    name: str
    root: Path
    records: list[Record]
    image_features: np.ndarray | None = None
    text_features: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> list[str]:
        """Record ids in order."""
        return [r.id for r in self.records]

    def fingerprint(self) -> str:
        """A short hash of ids, captions, labels, image file sizes and features (first MiB).

        Cheap (one ``stat`` per image, no image reads); changes when the data does.
        """
        h = hashlib.sha256()
        for r in self.records:
            size = r.image.stat().st_size if r.image is not None and r.image.exists() else -1
            h.update(json.dumps([r.id, list(r.captions), list(r.labels), size]).encode())
        for arr in (self.image_features, self.text_features):
            if arr is not None:
                h.update(np.ascontiguousarray(arr).tobytes()[: 1 << 20])
                h.update(str(arr.shape).encode())
        return h.hexdigest()[:16]

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> Dataset:
        """A new dataset holding the records at ``indices`` (and the matching feature rows)."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(
            name=name or self.name,
            root=self.root,
            records=[self.records[i] for i in idx],
            image_features=None if self.image_features is None else self.image_features[idx],
            text_features=None if self.text_features is None else self.text_features[idx],
        )

    def captions(self) -> tuple[list[str], np.ndarray]:
        """All captions flattened, and for each caption the index of its record."""
        texts: list[str] = []
        owner: list[int] = []
        for i, r in enumerate(self.records):
            texts.extend(r.captions)
            owner.extend([i] * len(r.captions))
        return texts, np.asarray(owner, dtype=np.int64)

    def labels_of(self, field: str | None = None) -> list[tuple[str, ...]]:
        """Each record's labels: ``Record.labels``, or those of the record field ``field``.

        A field (a key of ``Record.extra``, e.g. ``"subCategory"`` of the fashion set) holds one
        label (a string or number) or several (a list); a record without it has no label.

        Raises:
            ValueError: when no record has ``field``, naming the fields there are.
        """
        if field is None:
            return [r.labels for r in self.records]
        if self.records and not any(field in r.extra for r in self.records):
            fields = sorted({k for r in self.records for k in r.extra})
            raise ValueError(
                f"no record of {self.name!r} has the field {field!r}; fields: {fields or 'none'}"
            )
        out = []
        for r in self.records:
            value = r.extra.get(field)
            values = value if isinstance(value, list | tuple) else [] if value is None else [value]
            out.append(tuple(str(v) for v in values))
        return out

    def label_names(self, field: str | None = None) -> list[str]:
        """Sorted label vocabulary (of ``Record.labels``, or of the record field ``field``)."""
        return sorted({lab for labels in self.labels_of(field) for lab in labels})

    def label_matrix(
        self, names: Sequence[str] | None = None, field: str | None = None
    ) -> np.ndarray:
        """``[n_records, n_labels]`` boolean matrix (columns in ``names`` or sorted order).

        ``field`` takes the labels from that record field instead of ``Record.labels`` (see
        :meth:`labels_of`), e.g. ``label_matrix(field="subCategory")`` for coarser relevance.
        """
        names = list(names) if names is not None else self.label_names(field)
        col = {n: j for j, n in enumerate(names)}
        out = np.zeros((len(self.records), len(names)), dtype=bool)
        for i, labels in enumerate(self.labels_of(field)):
            for lab in labels:
                if lab in col:
                    out[i, col[lab]] = True
        return out

    @property
    def has_labels(self) -> bool:
        """Whether any record carries a label."""
        return any(r.labels for r in self.records)

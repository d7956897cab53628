"""What goes into an index: records with their embeddings and packed binary codes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xmodal.datasets.record import Record

__all__ = ["EncodedItems", "check_bits"]


def check_bits(bits: int) -> int:
    """``bits`` if it is a usable code length (a positive multiple of 8), else ``ValueError``.

    FAISS binary indexes store whole bytes, so code lengths are multiples of 8 (16, 32, 64 and
    128 are the usual ones).
    """
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or bits < 8 or bits % 8:
        raise ValueError(
            f"bits must be a positive multiple of 8 (e.g. 16, 32, 64, 128); got {bits!r}"
        )
    return int(bits)


@dataclass(frozen=True)
class EncodedItems:
    """Records ready to index: one image row per record, one text row per caption.

    Attributes:
        records: The items (id, image path, captions, labels).
        image_vectors: ``[n_records, d]`` float32 L2-normalised joint-space embeddings.
        image_codes: ``[n_records, bits / 8]`` uint8 packed codes (:func:`~xmodal.evaluation.pack_codes`).
        text_vectors: ``[n_texts, d]`` float32 embeddings of the captions, in
            ``Dataset.captions()`` order.
        text_codes: ``[n_texts, bits / 8]`` uint8 packed codes.
        text_to_image: ``[n_texts]`` index into ``records`` of each caption's record.
    """

    records: Sequence[Record]
    image_vectors: np.ndarray
    image_codes: np.ndarray
    text_vectors: np.ndarray
    text_codes: np.ndarray
    text_to_image: np.ndarray

    def __post_init__(self) -> None:
        n, n_text = len(self.records), len(self.text_to_image)
        iv, tv = self.image_vectors, self.text_vectors
        if iv.ndim != 2 or iv.shape[0] != n:
            raise ValueError(f"image_vectors must be [{n}, d] (one per record), got {iv.shape}")
        if tv.ndim != 2 or tv.shape != (n_text, iv.shape[1]):
            raise ValueError(
                f"text_vectors must be [{n_text}, {iv.shape[1]}] (one per caption), got {tv.shape}"
            )
        for name, codes, rows in (
            ("image_codes", self.image_codes, n),
            ("text_codes", self.text_codes, n_text),
        ):
            if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[0] != rows:
                raise ValueError(
                    f"{name} must be packed uint8 [{rows}, bits/8], got {codes.dtype} {codes.shape}"
                )
        if self.image_codes.shape[1] != self.text_codes.shape[1]:
            raise ValueError(
                f"image and text codes differ in length: {self.image_codes.shape[1]} vs "
                f"{self.text_codes.shape[1]} bytes"
            )
        owner = np.asarray(self.text_to_image)
        if n_text and (owner.min() < 0 or owner.max() >= n):
            raise ValueError(f"text_to_image must index records 0..{n - 1}")
        expected = sum(len(r.captions) for r in self.records)
        if expected != n_text:
            raise ValueError(
                f"{n_text} text rows but the records have {expected} captions; text rows are the "
                "captions in Dataset.captions() order"
            )
        if n_text and np.any(np.diff(owner) < 0):
            raise ValueError("text rows must follow record order (Dataset.captions() order)")
        seen: set[str] = set()
        for r in self.records:
            if r.id in seen:
                raise ValueError(f"duplicate record id {r.id!r}")
            seen.add(r.id)

    @property
    def dim(self) -> int:
        """Embedding size."""
        return int(self.image_vectors.shape[1])

    @property
    def bits(self) -> int:
        """Code length in bits."""
        return int(self.image_codes.shape[1] * 8)

    def __len__(self) -> int:
        return len(self.records)

    def select(self, keep: np.ndarray) -> EncodedItems:
        """The items at record indices ``keep`` (and their captions), in that order."""
        keep = np.asarray(keep, dtype=np.int64)
        new_index = np.full(len(self.records), -1, dtype=np.int64)
        new_index[keep] = np.arange(len(keep))
        rows = np.flatnonzero(new_index[self.text_to_image] >= 0)
        # captions must follow the new record order
        rows = rows[np.argsort(new_index[self.text_to_image[rows]], kind="stable")]
        return EncodedItems(
            records=[self.records[i] for i in keep],
            image_vectors=self.image_vectors[keep],
            image_codes=self.image_codes[keep],
            text_vectors=self.text_vectors[rows],
            text_codes=self.text_codes[rows],
            text_to_image=new_index[self.text_to_image[rows]],
        )

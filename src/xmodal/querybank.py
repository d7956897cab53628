"""Query-bank normalisation: fewer hubs in cross-modal ranking, from training queries alone.

In a joint embedding space some gallery items (hubs) are close to many queries and crowd the top
of every ranking. Query-bank normalisation (Bogolin et al., "Cross Modal Retrieval with
Querybank Normalisation", CVPR 2022), here in its inverted-softmax form (Smith et al., ICLR
2017), scores a query ``q`` against a gallery item ``g`` by

    cos(q, g) + bias(g),   bias(g) = -(1/β) · log Σ_b exp(β · cos(b, g)),

the sum running over a bank of *training* queries of the other modality: an image in the
gallery is compared with a bank of training captions, a caption with a bank of training images.
A gallery item that many training queries find close gets a lower score for every query. The
bias depends only on the gallery item, so it is computed once per item; within one query's
ranking the query's own bias is a constant, so a single matrix ``S + b_image[:, None] +
b_text[None, :]`` ranks both directions (image→text along rows, text→image along columns).

The bank holds embeddings of the training split only: no test-time query set is needed and
nothing about the evaluated split leaks into the scores. Same-modality retrieval (image→image,
text→text) and mAP keep the plain cosine. An index built from such a run carries the bank, and
its cross-modal float and two-stage searches rank by the normalised score
(:mod:`xmodal.search.engine`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from xmodal.errors import BadInputError
from xmodal.io import atomic_write

__all__ = ["QUERY_BANK_FILE", "QUERY_BANK_FORMAT", "QueryBank", "load_query_bank"]

QUERY_BANK_FORMAT = "xmodal-query-bank/1"
#: The bank's file name in a run directory (and in an index's copy of the run).
QUERY_BANK_FILE = "query_bank.npz"
_CHUNK = 2048  # gallery rows per block: 2,048 × 5,000 bank scores is 40 MB


@dataclass(frozen=True)
class QueryBank:
    """Training-split embeddings of both modalities and the inverse temperature ``beta``.

    Attributes:
        image: (n, d) L2-normalised embeddings of training images (the bank for captions in a
            gallery).
        text: (m, d) L2-normalised embeddings of training captions (the bank for images in a
            gallery).
        beta: Inverse temperature of the inverted softmax (> 0); large values let only the
            closest bank queries count, small ones approach a constant shift.
    """

    image: np.ndarray
    text: np.ndarray
    beta: float

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"query bank beta must be > 0, got {self.beta}")
        for name, bank in (("image", self.image), ("text", self.text)):
            if bank.ndim != 2 or len(bank) == 0:
                raise ValueError(f"query bank {name} embeddings must be a non-empty 2-D array")
        if self.image.shape[1] != self.text.shape[1]:
            raise ValueError(
                f"query bank dimensions differ: image {self.image.shape[1]}, "
                f"text {self.text.shape[1]}"
            )

    def _bias(self, gallery: np.ndarray, bank: np.ndarray) -> np.ndarray:
        gallery = np.asarray(gallery, dtype=np.float32)
        if gallery.ndim != 2 or gallery.shape[1] != bank.shape[1]:
            raise ValueError(
                f"gallery embeddings of shape {gallery.shape} do not fit a query bank of "
                f"dimension {bank.shape[1]}"
            )
        out = np.empty(len(gallery), dtype=np.float64)
        for i in range(0, len(gallery), _CHUNK):
            block = self.beta * (gallery[i : i + _CHUNK] @ bank.T).astype(np.float64)
            out[i : i + _CHUNK] = -logsumexp(block, axis=1) / self.beta
        return out.astype(np.float32)

    def image_bias(self, images: np.ndarray) -> np.ndarray:
        """Bias of each image as a gallery item for caption queries (against the caption bank)."""
        return self._bias(images, self.text)

    def text_bias(self, texts: np.ndarray) -> np.ndarray:
        """Bias of each caption as a gallery item for image queries (against the image bank)."""
        return self._bias(texts, self.image)

    def similarity(self, images: np.ndarray, texts: np.ndarray) -> np.ndarray:
        """The (n_images, n_texts) normalised score matrix: rank image→text along each row and
        text→image down each column."""
        sim = np.asarray(images, dtype=np.float32) @ np.asarray(texts, dtype=np.float32).T
        return sim + self.image_bias(images)[:, None] + self.text_bias(texts)[None, :]

    def save(self, path: str | Path) -> Path:
        """Write the bank as an ``.npz`` of plain arrays (no pickle), atomically."""

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    format=np.array(QUERY_BANK_FORMAT),
                    beta=np.array(self.beta, dtype=np.float64),
                    image=self.image,
                    text=self.text,
                )

        return atomic_write(Path(path), write)


def load_query_bank(path: str | Path) -> QueryBank:
    """Read a bank written by :meth:`QueryBank.save`.

    Raises:
        BadInputError: the file is not a readable query bank (naming it and why).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["format"]) != QUERY_BANK_FORMAT:
                raise BadInputError(path, f"not an {QUERY_BANK_FORMAT} file")
            return QueryBank(np.array(f["image"]), np.array(f["text"]), float(f["beta"]))
    except BadInputError:
        raise
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise BadInputError(path, f"not a readable query bank ({e.__class__.__name__}: {e})") from e

"""Recall@K, rsum and median / mean rank for caption retrieval (Flickr30K / COCO protocol).

Inputs: ``similarity[i, t]`` is the score of image ``i`` against text (caption) ``t``, higher =
better, and ``text_to_image[t]`` is the one image that caption ``t`` describes. Images may have
any positive number of captions (5 in Flickr30K / COCO, uneven elsewhere).

Ranks are 0-based (rank 0 = top of the list):

* **image -> text** (``i2t``): an image's rank is the best rank of any of its captions among all
  texts, as in the VSE++ / SCAN evaluation code.
* **text -> image** (``t2i``): a caption's rank is the rank of its one image among all images.

Ties are **pessimistic** and deterministic: a rank is the number of *other, non-matching* items
scoring **greater than or equal to** the positive, i.e. every tie is broken against the query.
For ``i2t`` the positive is the image's best-scoring caption and only texts of *other* images are
counted, so the image's other captions never push it down. On tie-free scores this equals the
rank that the argsort-based reference code gives; with ties it never flatters a model (a
constant similarity matrix gets Recall@K = 0 whenever there are at least K non-matching items).

``retrieval_recall`` reports Recall@{1,5,10} in percent (0-100) and ``rsum``, the sum of the
six. Median / mean ranks follow the VSE++ code: ``medr = floor(median(rank)) + 1`` and
``meanr = mean(rank) + 1`` (1-based).

The similarity matrix is read in chunks of image rows (two comparisons and two counts per
element), so 5,000 x 25,000 needs only the matrix itself plus ``O(chunk * n_texts)`` memory.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from xmodal.evaluation._checks import real_matrix

__all__ = ["recall_at_k", "retrieval_rank_stats", "retrieval_ranks", "retrieval_recall"]

#: Elements of the similarity matrix compared per chunk.
_CHUNK_ELEMENTS = 1 << 22

RECALL_KS = (1, 5, 10)


def retrieval_ranks(
    similarity: np.ndarray, text_to_image: np.ndarray, *, chunk_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """0-based best ranks of every image (i2t) and every text (t2i), ties counted against.

    Args:
        similarity: ``[n_images, n_texts]`` scores, higher = better (no NaN).
        text_to_image: ``[n_texts]`` integer index of each caption's image.
        chunk_size: Image rows per chunk (default: about four million elements per chunk).

    Returns:
        ``(image_ranks [n_images], text_ranks [n_texts])`` as int64 arrays.

    Raises:
        ValueError: on mismatched shapes, NaN scores, out-of-range image indices, or an image
            without any caption.

    Example:
        >>> sim = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.5]])
        >>> retrieval_ranks(sim, np.array([0, 1, 1]))
        (array([0, 0]), array([0, 0, 0]))
    """
    sim, t2i = _check_inputs(similarity, text_to_image)
    n_images, n_texts = sim.shape
    rows = _chunk_rows(chunk_size, n_texts)

    positive = sim[t2i, np.arange(n_texts)]  # each caption's score with its own image
    by_image = np.argsort(t2i, kind="stable")
    starts = np.searchsorted(t2i[by_image], np.arange(n_images))
    best = np.maximum.reduceat(positive[by_image], starts)  # best caption score per image
    # Own captions tied with the best one; they are not counted against the image.
    own_at_best = np.bincount(t2i, weights=positive == best[t2i], minlength=n_images)

    image_ranks = np.empty(n_images, dtype=np.int64)
    text_ranks = np.zeros(n_texts, dtype=np.int64)
    for a in range(0, n_images, rows):
        b = min(a + rows, n_images)
        block = sim[a:b]
        if np.issubdtype(block.dtype, np.floating) and np.isnan(block).any():
            raise ValueError("similarity contains NaN; every score must be comparable")
        image_ranks[a:b] = np.count_nonzero(block >= best[a:b, None], axis=1)
        text_ranks += np.count_nonzero(block >= positive[None, :], axis=0)
    image_ranks -= own_at_best.astype(np.int64)
    text_ranks -= 1  # the caption's own image always scores >= itself
    return image_ranks, text_ranks


def recall_at_k(ranks: np.ndarray, ks: Iterable[int] = RECALL_KS) -> dict[int, float]:
    """Percentage (0-100) of 0-based ``ranks`` below each ``k``.

    Example:
        >>> recall_at_k(np.array([0, 3, 12, 1]), ks=(1, 5))
        {1: 25.0, 5: 75.0}
    """
    r = np.asarray(ranks)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array, got shape {r.shape}")
    out: dict[int, float] = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"every k must be >= 1, got {k}")
        out[int(k)] = 100.0 * float(np.count_nonzero(r < k)) / r.size
    return out


def retrieval_recall(
    similarity: np.ndarray, text_to_image: np.ndarray, *, chunk_size: int | None = None
) -> dict[str, float]:
    """Recall@{1,5,10} both ways, in percent, and their sum ``rsum``.

    Returns:
        ``{"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"}``.

    Example:
        >>> sim = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.5]])
        >>> retrieval_recall(sim, np.array([0, 1, 1]))["rsum"]
        600.0
    """
    image_ranks, text_ranks = retrieval_ranks(similarity, text_to_image, chunk_size=chunk_size)
    out: dict[str, float] = {}
    for prefix, ranks in (("i2t", image_ranks), ("t2i", text_ranks)):
        for k, value in recall_at_k(ranks, RECALL_KS).items():
            out[f"{prefix}_r{k}"] = value
    out["rsum"] = float(sum(out.values()))
    return out


def retrieval_rank_stats(
    similarity: np.ndarray, text_to_image: np.ndarray, *, chunk_size: int | None = None
) -> dict[str, float]:
    """Median and mean 1-based ranks: ``{"i2t_medr", "i2t_meanr", "t2i_medr", "t2i_meanr"}``."""
    image_ranks, text_ranks = retrieval_ranks(similarity, text_to_image, chunk_size=chunk_size)
    out: dict[str, float] = {}
    for prefix, ranks in (("i2t", image_ranks), ("t2i", text_ranks)):
        out[f"{prefix}_medr"] = float(np.floor(np.median(ranks)) + 1)
        out[f"{prefix}_meanr"] = float(ranks.mean() + 1)
    return out


# --------------------------------------------------------------------------- helpers


def _check_inputs(
    similarity: np.ndarray, text_to_image: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    sim = real_matrix(similarity, "similarity", "[n_images, n_texts]")
    n_images, n_texts = sim.shape
    t2i = np.asarray(text_to_image)
    if t2i.ndim != 1 or t2i.shape[0] != n_texts:
        raise ValueError(
            f"text_to_image must be 1-D with one entry per text ({n_texts} texts = "
            f"similarity.shape[1]), got shape {t2i.shape}"
        )
    if t2i.dtype == bool or not np.issubdtype(t2i.dtype, np.integer):
        raise ValueError(f"text_to_image must hold integer image indices, got dtype {t2i.dtype}")
    t2i = t2i.astype(np.int64)
    bad = (t2i < 0) | (t2i >= n_images)
    if bad.any():
        t = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"text_to_image[{t}] = {int(t2i[t])} is not an image index in [0, {n_images})"
        )
    lonely = np.flatnonzero(np.bincount(t2i, minlength=n_images) == 0)
    if lonely.size:
        shown = ", ".join(str(i) for i in lonely[:5]) + (", ..." if lonely.size > 5 else "")
        raise ValueError(
            f"{lonely.size} image(s) have no caption in text_to_image (rows {shown}); "
            "drop them from similarity before evaluating"
        )
    return sim, t2i


def _chunk_rows(chunk_size: int | None, n_cols: int) -> int:
    if chunk_size is None:
        return max(1, _CHUNK_ELEMENTS // n_cols)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return int(chunk_size)

"""Precision@k and precision-recall curves for retrieval.

Inputs are the same as for :mod:`xmodal.evaluation.average_precision`: ``scores[q, j]``, higher
= better (``-distance`` for Hamming codes), and a bool ``relevant[q, j]``.

Two kinds of precision-recall curve:

* **Hamming radius** (:func:`hamming_precision_recall`, ``precision_recall_curve(..., bits=B)``):
  the classic hashing curve. At radius ``r = 0..B`` a query retrieves every database item within
  Hamming distance ``r`` (``score >= -r``; no tie question arises). Per query, precision =
  relevant retrieved / retrieved and recall = relevant retrieved / relevant. Precision at ``r``
  is averaged over the queries that retrieve at least one item at ``r`` (a query retrieving
  nothing is skipped at that radius, as in the common hashing code); NaN if no query retrieves
  anything. Recall is averaged over the queries that have at least one relevant item; NaN if none
  has.
* **Top-k** (:func:`topk_precision_recall`, ``precision_recall_curve(..., ks=[...])``): the curve
  over ranking cut-offs for real-valued scores. At cut-off ``k`` every query retrieves its top
  ``k``; precision = hits / k averaged over all queries, recall = hits / relevant averaged over
  the queries with at least one relevant item (NaN if none).

``precision_at_k`` is the mean over all queries of hits@k / k.

Ties at a cut-off follow ``ties=``: ``"index"`` breaks them by database index (stable sort);
``"average"`` (default) gives the expectation over random orders of tied items, which for a
count is linear: when the cut leaves ``m`` of a tie group of ``n`` items (``r`` relevant) inside,
the expected hits are ``R + m * r / n`` with ``R`` the relevant items scoring strictly higher.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from xmodal.evaluation.average_precision import (
    Ties,
    _check_scores_relevant,
    _check_ties,
    _chunk_rows,
    _sorted_rows,
    _TieGroups,
)

__all__ = [
    "PRCurve",
    "hamming_precision_recall",
    "precision_at_k",
    "precision_recall_curve",
    "topk_precision_recall",
]


class PRCurve(NamedTuple):
    """A precision-recall curve; unpacks as ``precision, recall, cutoffs = curve``.

    Attributes:
        precision: ``[n_points]`` float64 mean precision per cut-off.
        recall: ``[n_points]`` float64 mean recall per cut-off.
        cutoffs: ``[n_points]`` int64 Hamming radii (``0..bits``) or top-k cut-offs.
    """

    precision: np.ndarray
    recall: np.ndarray
    cutoffs: np.ndarray


def precision_at_k(
    scores: np.ndarray,
    relevant: np.ndarray,
    ks: Sequence[int],
    ties: Ties = "average",
    *,
    chunk_size: int | None = None,
) -> dict[int, float]:
    """Mean precision@k over all queries for each ``k`` in ``ks`` (values in ``[0, 1]``).

    Raises:
        ValueError: on bad shapes (see :func:`mean_average_precision`) or a ``k`` outside
            ``[1, n_db]``.

    Example:
        >>> scores = np.array([[0.9, 0.8, 0.8, 0.1]])
        >>> relevant = np.array([[True, False, True, False]])
        >>> precision_at_k(scores, relevant, [1, 2])      # k=2 cuts the 0.8 tie in half
        {1: 1.0, 2: 0.75}
        >>> precision_at_k(scores, relevant, [1, 2], ties="index")
        {1: 1.0, 2: 0.5}
    """
    s, rel = _check_scores_relevant(scores, relevant)
    k_arr = _check_ks(ks, s.shape[1])
    _check_ties(ties)
    total = np.zeros(k_arr.size, dtype=np.float64)
    for a, b in _chunks(s.shape, chunk_size):
        total += (_hits_at_k(s[a:b], rel[a:b], k_arr, ties) / k_arr).sum(axis=0)
    return {int(k): float(v) for k, v in zip(k_arr, total / s.shape[0], strict=True)}


def topk_precision_recall(
    scores: np.ndarray,
    relevant: np.ndarray,
    ks: Sequence[int],
    ties: Ties = "average",
    *,
    chunk_size: int | None = None,
) -> PRCurve:
    """Precision and recall of the top ``k`` for each ``k`` in ``ks`` (see module docstring)."""
    s, rel = _check_scores_relevant(scores, relevant)
    k_arr = _check_ks(ks, s.shape[1])
    _check_ties(ties)
    prec_sum = np.zeros(k_arr.size, dtype=np.float64)
    rec_sum = np.zeros(k_arr.size, dtype=np.float64)
    n_with_rel = 0
    for a, b in _chunks(s.shape, chunk_size):
        hits = _hits_at_k(s[a:b], rel[a:b], k_arr, ties)
        n_rel = rel[a:b].sum(axis=1)
        has = n_rel > 0
        prec_sum += (hits / k_arr).sum(axis=0)
        rec_sum += (hits[has] / n_rel[has, None]).sum(axis=0)
        n_with_rel += int(has.sum())
    precision = prec_sum / s.shape[0]
    recall = rec_sum / n_with_rel if n_with_rel else np.full(k_arr.size, np.nan)
    return PRCurve(precision, recall, k_arr)


def hamming_precision_recall(
    scores: np.ndarray,
    relevant: np.ndarray,
    bits: int,
    *,
    chunk_size: int | None = None,
) -> PRCurve:
    """The hashing PR curve over Hamming radius ``0..bits`` (see module docstring).

    Args:
        scores: ``[n_query, n_db]`` negative Hamming distances (:func:`hamming_scores`).
        relevant: ``[n_query, n_db]`` bool relevance.
        bits: Code length; the curve has ``bits + 1`` points.

    Raises:
        ValueError: on bad shapes, a non-positive ``bits``, or scores that are not whole
            numbers in ``[-bits, 0]``.
    """
    s, rel = _check_scores_relevant(scores, relevant)
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or bits < 1:
        raise ValueError(f"bits must be a positive int, got {bits!r}")
    bits = int(bits)
    if not (np.all(s == np.rint(s)) and s.min() >= -bits and s.max() <= 0):
        raise ValueError(
            f"scores must be negative Hamming distances: whole numbers in [-{bits}, 0] "
            "(use hamming_scores)"
        )
    width = bits + 1
    prec_sum = np.zeros(width, dtype=np.float64)
    prec_count = np.zeros(width, dtype=np.int64)
    rec_sum = np.zeros(width, dtype=np.float64)
    n_with_rel = 0
    for a, b in _chunks(s.shape, chunk_size):
        dist = (-s[a:b]).astype(np.int64)
        n = b - a
        idx = (np.arange(n)[:, None] * width + dist).ravel()
        retrieved = np.bincount(idx, minlength=n * width).reshape(n, width).cumsum(axis=1)
        hits = (
            np.bincount(idx, weights=rel[a:b].ravel(), minlength=n * width)
            .reshape(n, width)
            .cumsum(axis=1)
        )
        some = retrieved > 0
        prec_sum += np.where(some, hits / np.maximum(retrieved, 1), 0.0).sum(axis=0)
        prec_count += some.sum(axis=0)
        n_rel = rel[a:b].sum(axis=1)
        has = n_rel > 0
        rec_sum += (hits[has] / n_rel[has, None]).sum(axis=0)
        n_with_rel += int(has.sum())
    precision = np.divide(prec_sum, prec_count, out=np.full(width, np.nan), where=prec_count > 0)
    recall = rec_sum / n_with_rel if n_with_rel else np.full(width, np.nan)
    return PRCurve(precision, recall, np.arange(width, dtype=np.int64))


def precision_recall_curve(
    scores: np.ndarray,
    relevant: np.ndarray,
    *,
    bits: int | None = None,
    ks: Sequence[int] | None = None,
    ties: Ties = "average",
    chunk_size: int | None = None,
) -> PRCurve:
    """PR curve over Hamming radius (``bits=``) or over top-k cut-offs (``ks=``); give one.

    Example:
        >>> scores = -np.array([[0, 1, 2]])           # -Hamming distances, 2-bit codes
        >>> relevant = np.array([[True, False, True]])
        >>> precision_recall_curve(scores, relevant, bits=2).precision
        array([1.        , 0.5       , 0.66666667])
    """
    if (bits is None) == (ks is None):
        raise ValueError("give exactly one of bits= (Hamming radius curve) or ks= (top-k curve)")
    if bits is not None:
        return hamming_precision_recall(scores, relevant, bits, chunk_size=chunk_size)
    assert ks is not None
    return topk_precision_recall(scores, relevant, ks, ties, chunk_size=chunk_size)


# --------------------------------------------------------------------------- helpers


def _check_ks(ks: Sequence[int], n_db: int) -> np.ndarray:
    k_arr = np.asarray(list(ks))
    if k_arr.ndim != 1 or k_arr.size == 0:
        raise ValueError("ks must be a non-empty list of cut-offs")
    if k_arr.dtype == bool or not np.issubdtype(k_arr.dtype, np.integer):
        raise ValueError(f"ks must hold integers, got {list(ks)!r}")
    bad = k_arr[(k_arr < 1) | (k_arr > n_db)]
    if bad.size:
        raise ValueError(f"every k must be in [1, n_db={n_db}], got {int(bad[0])}")
    return k_arr.astype(np.int64)


def _chunks(shape: tuple[int, ...], chunk_size: int | None) -> list[tuple[int, int]]:
    n_query, n_db = shape
    rows = _chunk_rows(chunk_size, n_db)
    return [(a, min(a + rows, n_query)) for a in range(0, n_query, rows)]


def _hits_at_k(s: np.ndarray, rel: np.ndarray, ks: np.ndarray, ties: str) -> np.ndarray:
    """``[rows, len(ks)]`` (expected) relevant items among each row's top ``k``."""
    if ties == "index":
        _, rr = _sorted_rows(s, rel)
        return np.cumsum(rr, axis=1, dtype=np.float64)[:, ks - 1]
    ss, rr = _sorted_rows(s, rel, stable=False)
    g = _TieGroups(ss, rr)
    out = np.empty((s.shape[0], ks.size), dtype=np.float64)
    for i, k in enumerate(ks):
        cut = g.containing(np.full(s.shape[0], k - 1))
        out[:, i] = g.rel_before[cut] + (k - g.first[cut]) * g.n_rel[cut] / g.size[cut]
    return out

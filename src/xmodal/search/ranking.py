"""The one ranking rule of every search: best score first, equal scores by position, padding last.

Each row of a ``[q, m]`` score matrix is ranked over its candidate positions (``-1`` marks
padding: no row). The order is total and deterministic, so a single index, a merge of shards
and an exact re-rank agree row for row::

    >>> import numpy as np
    >>> s, p = top_k(np.array([[0.5, 0.75, 0.5, 1.0]], np.float32), np.array([[7, 3, 2, -1]]), 4)
    >>> p.tolist(), s.tolist()
    ([[3, 2, 7, -1]], [[0.75, 0.5, 0.5, -inf]])

Implementation: each (score, position) pair becomes one unsigned 64-bit key whose ascending
order is the ranking (the score's order-preserving 32-bit image in the high half, the position
in the low half; padding the largest key), so one ``partition`` picks the ``k`` best and one
``sort`` of those ``k`` orders them, ties included, without a comparison callback;
:func:`top_k` reads scores and positions back from the sorted keys, :func:`best_first` returns
the order itself (to carry other arrays along).
"""

from __future__ import annotations

import numpy as np

__all__ = ["best_first", "top_k"]

_PAD = np.iinfo(np.uint64).max
_LOW = np.uint64(0xFFFFFFFF)


def _score_keys(scores: np.ndarray, higher_better: bool) -> np.ndarray:
    """uint32 keys whose ascending order is the best-first order of float32 or int32 scores."""
    if scores.dtype.kind in "iu":
        wide = scores.dtype.itemsize > 4 or scores.dtype == np.uint32
        if wide and scores.size and (scores.min() < -(1 << 31) or scores.max() >= 1 << 31):
            raise ValueError("integer scores must fit in int32")
        v = (scores.astype(np.int64) + (1 << 31)).astype(np.uint32)
    elif scores.dtype == np.float32:
        # + 0.0 turns -0.0 into 0.0: equal scores tie, whatever their sign bit
        bits = np.ascontiguousarray(scores + np.float32(0.0)).view(np.uint32)
        # IEEE-754 -> unsigned order: flip the sign bit of positives, every bit of negatives
        v = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(1 << 31))
    else:
        raise ValueError(f"scores must be float32 or integer, got {scores.dtype}")
    return ~v if higher_better else v


def _rank_keys(scores: np.ndarray, positions: np.ndarray, higher_better: bool) -> np.ndarray:
    """``[q, m]`` uint64 keys whose ascending order is the ranking (padding: the largest key)."""
    if scores.ndim != 2:
        raise ValueError(f"scores must be [q, m], got shape {scores.shape}")
    pos = np.broadcast_to(np.asarray(positions, dtype=np.int64), scores.shape)
    if pos.size and pos.max() > 0xFFFFFFFF:
        raise ValueError("positions must be below 2**32")
    key = (_score_keys(scores, higher_better).astype(np.uint64) << np.uint64(32)) | (
        pos.astype(np.uint64) & _LOW
    )
    key[pos < 0] = _PAD
    return key


def best_first(
    scores: np.ndarray, positions: np.ndarray, k: int, *, higher_better: bool = True
) -> np.ndarray:
    """Column indices ``[q, min(k, m)]`` of each row's ``k`` best entries, in ranking order.

    Args:
        scores: ``[q, m]`` float32 or integer (int32 range) scores; NaN is not a score.
        positions: ``[q, m]`` or ``[m]`` row positions of the entries, ``-1`` for padding
            (ranked last whatever its score); positions must be below ``2**32``.
        k: Entries kept per row.
        higher_better: Rank high scores first (similarities) or low ones (distances).

    Returns:
        ``order`` such that ``np.take_along_axis(scores, order, 1)`` is the ranked scores (use
        it to carry other per-entry arrays along).
    """
    key = _rank_keys(np.asarray(scores), positions, higher_better)
    k = max(0, min(int(k), key.shape[1]))
    if k == 0:
        return np.zeros((key.shape[0], 0), dtype=np.int64)
    if k < key.shape[1]:
        picked = np.argpartition(key, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(key, picked, 1), axis=1)
        return np.take_along_axis(picked, order, 1)
    return np.argsort(key, axis=1)


def top_k(
    scores: np.ndarray, positions: np.ndarray, k: int, *, higher_better: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best ``(scores [q, k'], positions [q, k'])`` of each row, ``k' = min(k, m)``.

    Ranked as :func:`best_first` ranks (arguments alike), but sorts the keys themselves and
    reads scores and positions back from them (no index gathering). Padding keeps position
    ``-1`` and gets the worst score: ``-inf`` / ``+inf`` for floats, the dtype's minimum /
    maximum for integers. A score of ``-0.0`` comes back as ``0.0``.
    """
    scores = np.asarray(scores)
    key = _rank_keys(scores, positions, higher_better)
    k = max(0, min(int(k), key.shape[1]))
    if k < key.shape[1]:
        key = np.partition(key, k - 1, axis=1)[:, :k] if k else key[:, :0]
    key.sort(axis=1)
    pad = key == _PAD
    pos = (key & _LOW).astype(np.int64)
    v = (key >> np.uint64(32)).astype(np.uint32)
    if higher_better:
        v = ~v
    if scores.dtype.kind in "iu":
        out = (v.astype(np.int64) - (1 << 31)).astype(scores.dtype)
        info = np.iinfo(scores.dtype)
        worst: float | int = int(info.min if higher_better else info.max)
    else:
        out = np.where(v >> 31 == 1, v & np.uint32(0x7FFFFFFF), ~v).view(np.float32)
        worst = -np.inf if higher_better else np.inf
    if pad.any():
        out[pad] = worst
        pos[pad] = -1
    return out, pos

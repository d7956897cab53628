"""Search one collection of a snapshot: float, Hamming or two-stage, with an optional row filter.

All functions return row **positions** (``-1`` in padding) and scores; the caller maps positions to
stable ids. Rankings are deterministic: equal scores (frequent with Hamming distances) are
ordered by row position, i.e. by insertion order.

Filters (``allowed``: the sorted row positions that may be returned) go to FAISS as an
``IDSelectorBitmap`` where the index's kind gives search parameters
(:meth:`~xmodal.index.kinds.IndexKind.search_parameters`: flat, HNSW, IVF-PQ, binary flat, binary
HNSW); small filters (at most :data:`EXACT_FILTER_MAX` rows) and kinds without them (binary IVF)
are searched exactly over the allowed rows instead. Every ranking is
:func:`xmodal.search.ranking.top_k`'s. Queries whose filtered graph/cluster search came back
short are redone exactly.

A ``bias`` (a per-row offset, looked up by row position: e.g. a run's query-bank normalisation,
:mod:`xmodal.querybank`) is added to each row's inner product: float searches then take
``k × max(rerank factor, BIAS_CANDIDATES_PER_ROW)`` candidates by inner product and rank them by
inner product + bias, and ``two-stage`` ranks its Hamming candidates the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import faiss
import numpy as np

from xmodal.index.kinds import Family
from xmodal.index.snapshot import Collection
from xmodal.search.ranking import best_first, top_k

__all__ = [
    "BIAS_CANDIDATES_PER_ROW",
    "EXACT_FILTER_MAX",
    "MODES",
    "Mode",
    "rerank_exact",
    "rerank_factor",
    "search_collection",
]

Mode = Literal["float", "hamming", "two-stage"]
MODES = ("float", "hamming", "two-stage")

#: Filters allowing at most this many rows are searched exactly over those rows.
EXACT_FILTER_MAX = 20_000
#: Inner-product candidates per wanted row that a biased float search re-ranks.
BIAS_CANDIDATES_PER_ROW = 10
#: A per-row score offset by row position: ``[n]`` int64 positions (``-1``: padding, any value)
#: -> ``[n]`` float32.
RowBias = Callable[[np.ndarray], np.ndarray]
#: Bytes of gathered float rows per re-ranking chunk.
_RERANK_BYTES = 1 << 26


def _selector(allowed: np.ndarray, n: int) -> tuple[Any, np.ndarray]:
    mask = np.zeros(n, dtype=bool)
    mask[allowed] = True
    bitmap = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap)), bitmap


def _float_exact(
    col: Collection, q: np.ndarray, k: int, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    scores = q @ np.asarray(col.vectors[allowed], dtype=np.float32).T
    return top_k(scores, allowed, k)


def _hamming_exact(
    col: Collection, codes: np.ndarray, k: int, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    sub = faiss.IndexBinaryFlat(col.codes.shape[1] * 8)
    sub.add(np.ascontiguousarray(col.codes[allowed]))
    dist, idx = sub.search(codes, min(k, len(allowed)))
    pos = np.where(idx >= 0, allowed[np.maximum(idx, 0)], -1)
    return dist, pos


def _search(
    col: Collection, family: Family, queries: np.ndarray, k: int, allowed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores or distances, positions)`` of the ``k`` best rows, unsorted ties."""
    index = col.index(family)
    exact = _float_exact if family == "float" else _hamming_exact
    n = len(col)
    if n == 0 or (allowed is not None and len(allowed) == 0):
        shape = (len(queries), 0)
        empty = np.zeros(shape, np.float32 if family == "float" else np.int32)
        return empty, np.zeros(shape, np.int64)
    if allowed is None:
        return index.search(queries, min(k, n))
    k = min(k, len(allowed))
    selector, bitmap = _selector(allowed, n)
    params = (
        col.kind(family).search_parameters(index, selector)
        if len(allowed) > EXACT_FILTER_MAX
        else None
    )
    if params is None:
        return exact(col, queries, k, allowed)
    scores, positions = index.search(queries, k, params=params)
    del bitmap  # the selector read it during the search
    short = np.flatnonzero((positions < 0).any(axis=1))
    if len(short):  # a graph or cluster search found fewer than k allowed rows
        s2, p2 = exact(col, queries[short], k, allowed)
        scores[short], positions[short] = s2, p2
    return scores, positions


def search_collection(
    col: Collection,
    mode: Mode,
    k: int,
    *,
    vectors: np.ndarray | None = None,
    codes: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    candidates: int = 1000,
    bias: RowBias | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Search one collection.

    Args:
        col: The collection.
        mode: ``float`` (FAISS float index, inner product), ``hamming`` (FAISS binary index) or
            ``two-stage`` (``candidates`` Hamming neighbours re-ranked by exact inner product).
        k: Rows per query.
        vectors: ``[q, d]`` float32 query embeddings (``float``, ``two-stage``).
        codes: ``[q, bits / 8]`` packed query codes (``hamming``, ``two-stage``).
        allowed: Sorted row positions that may be returned (``None``: all).
        candidates: Hamming candidates re-ranked in ``two-stage`` mode.
        bias: Added to each row's inner product in ``float`` and ``two-stage`` (see the module
            docstring); ``hamming`` ignores it.

    Returns:
        ``(positions [q, k'], scores [q, k'] float32, distances [q, k'] int32 or None)`` with
        ``k' = min(k, rows allowed)``, best first.
    """
    if mode in ("float", "two-stage") and vectors is None:
        raise ValueError(f"mode {mode!r} needs query vectors")
    if mode in ("hamming", "two-stage") and codes is None:
        raise ValueError(f"mode {mode!r} needs query codes")
    if mode == "float":
        assert vectors is not None
        factor = rerank_factor(col)
        if bias is not None:
            factor = max(factor, BIAS_CANDIDATES_PER_ROW)
        if factor > 1:  # IVF-PQ or a bias: candidates by PQ or inner product, ranked exactly
            _, pos = _search(col, "float", vectors, k * factor, allowed)
            pos, scores, _ = rerank_exact(col, vectors, pos, k, bias=bias)
            return pos, scores, None
        scores, pos = _search(col, "float", vectors, k, allowed)
        scores, pos = top_k(scores, pos, k)
        return pos, scores, None
    assert codes is not None
    dist, pos = _search(col, "binary", codes, k if mode == "hamming" else candidates, allowed)
    dist, pos = top_k(dist, pos, dist.shape[1], higher_better=False)
    dist = np.where(pos < 0, -1, dist).astype(np.int32, copy=False)
    if mode == "hamming":
        scores = np.where(pos < 0, -np.inf, (-dist).astype(np.float32)).astype(
            np.float32
        )  # 0, not -0
        return pos, scores, dist
    assert vectors is not None
    return rerank_exact(col, vectors, pos, k, dist, bias=bias)


def rerank_factor(col: Collection) -> int:
    """How many PQ candidates per wanted row an IVF-PQ float index re-ranks exactly (0: none)."""
    return col.kind("float").rerank_factor(col.params("float"))


def rerank_exact(
    col: Collection,
    vectors: np.ndarray,
    cand: np.ndarray,
    k: int,
    dist: np.ndarray | None = None,
    *,
    bias: RowBias | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best of candidate positions ``cand`` (``-1``: none) by exact inner product with
    the collection's stored float rows (plus ``bias`` of each row, when given):
    ``(positions, scores, distances)``, best first, ties by position; ``distances`` carries the
    candidates' Hamming distances along (``-1`` without)."""
    if dist is None:
        dist = np.full(cand.shape, -1, dtype=np.int32)
    q, c = cand.shape
    k = min(k, c)
    out_pos = np.full((q, k), -1, dtype=np.int64)
    out_score = np.full((q, k), -np.inf, dtype=np.float32)
    out_dist = np.full((q, k), -1, dtype=np.int32)
    d = col.vectors.shape[1]
    step = max(1, _RERANK_BYTES // max(1, c * d * 4))
    for a in range(0, q, step):
        b = min(q, a + step)
        block = cand[a:b]
        rows = np.asarray(col.vectors[np.maximum(block, 0).ravel()], dtype=np.float32).reshape(
            b - a, c, d
        )
        scores = np.einsum("qcd,qd->qc", rows, vectors[a:b], optimize=False)
        if bias is not None:
            scores = scores + bias(block.ravel()).reshape(b - a, c)
        order = best_first(scores, block, k)
        out_pos[a:b] = np.take_along_axis(block, order, 1)
        out_score[a:b] = np.take_along_axis(scores, order, 1)
        out_dist[a:b] = np.take_along_axis(dist[a:b], order, 1)
    pad = out_pos < 0
    out_score[pad], out_dist[pad] = -np.inf, -1
    return out_pos, out_score, out_dist

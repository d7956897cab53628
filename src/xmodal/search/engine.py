"""Search one collection of a snapshot: float, Hamming or two-stage, with an optional row filter.

All functions return row **positions** (``-1`` in padding) and scores; the caller maps positions to
stable ids. Rankings are deterministic: equal scores (frequent with Hamming distances) are
ordered by row position, i.e. by insertion order.

Filters (``allowed``: the sorted row positions that may be returned) go to FAISS as an
``IDSelectorBitmap`` where the index supports one (flat, HNSW, IVF-PQ, binary flat, binary
HNSW); small filters (at most :data:`EXACT_FILTER_MAX` rows) and binary IVF indexes are searched
exactly over the allowed rows instead. Queries whose filtered graph/cluster search came back
short are redone exactly.
"""

from __future__ import annotations

from typing import Any, Literal

import faiss
import numpy as np

from xmodal.index.snapshot import Collection

__all__ = ["EXACT_FILTER_MAX", "MODES", "Mode", "rerank_exact", "rerank_factor", "search_collection"]

Mode = Literal["float", "hamming", "two-stage"]
MODES = ("float", "hamming", "two-stage")

#: Filters allowing at most this many rows are searched exactly over those rows.
EXACT_FILTER_MAX = 20_000
#: Bytes of gathered float rows per re-ranking chunk.
_RERANK_BYTES = 1 << 26
_INT_PAD = np.iinfo(np.int32).max


def _sortable(scores: np.ndarray, higher_better: bool) -> np.ndarray:
    """uint32 keys whose ascending order is best-first order of float32 or int32 ``scores``."""
    if scores.dtype.kind == "i":
        v = scores.astype(np.int64) + (1 << 31)
        v = v.astype(np.uint32)
    else:
        bits = np.ascontiguousarray(scores, dtype=np.float32).view(np.uint32)
        # IEEE-754 -> unsigned order: flip the sign bit of positives, every bit of negatives
        v = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(1 << 31))
    return ~v if higher_better else v


def _sorted(
    scores: np.ndarray, positions: np.ndarray, higher_better: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ordered best first, equal scores by position, padding (position -1) last.

    One ``np.sort`` of 64-bit keys ``score rank << 32 | position`` per row (positions < 2**32).
    """
    key = (_sortable(scores, higher_better).astype(np.uint64) << np.uint64(32)) | (
        positions.astype(np.uint64) & np.uint64(0xFFFFFFFF)
    )
    pad = positions < 0
    key[pad] = np.iinfo(np.uint64).max
    key.sort(axis=1)
    pad = key == np.iinfo(np.uint64).max
    pos = (key & np.uint64(0xFFFFFFFF)).astype(np.int64)
    pos[pad] = -1
    v = (key >> np.uint64(32)).astype(np.uint32)
    if higher_better:
        v = ~v
    if scores.dtype.kind == "i":
        out = (v.astype(np.int64) - (1 << 31)).astype(scores.dtype)
        out[pad] = np.iinfo(scores.dtype).max
    else:
        bits = np.where(v >> 31 == 1, v & np.uint32(0x7FFFFFFF), ~v)
        out = bits.view(np.float32)
        out[pad] = -np.inf if higher_better else np.inf
    return out, pos


def _topk_dense(
    scores: np.ndarray, candidates: np.ndarray, k: int, higher_better: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of a dense ``[q, m]`` score matrix over candidate positions ``[m]``."""
    q, m = scores.shape
    k = min(k, m)
    if k == 0:
        return np.zeros((q, 0), scores.dtype), np.zeros((q, 0), np.int64)
    s = scores if higher_better else -scores.astype(np.float64)
    if k < m:
        # the k-th best score; keep every candidate at least as good (ties decided by position)
        kth = -np.partition(-s, k - 1, axis=1)[:, k - 1 : k]
        keep = s >= kth
    else:
        keep = np.ones_like(s, dtype=bool)
    pos = np.broadcast_to(candidates, (q, m))
    key = np.where(keep, -s, np.inf)
    order = np.lexsort((pos, key), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(pos, order, 1)


def _selector(allowed: np.ndarray, n: int) -> tuple[Any, np.ndarray]:
    mask = np.zeros(n, dtype=bool)
    mask[allowed] = True
    bitmap = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap)), bitmap


def _params(index: Any, kind: str, selector: Any) -> Any | None:
    """Search parameters carrying ``selector`` (and the index's own search settings)."""
    if kind == "flat":
        return faiss.SearchParameters(sel=selector)
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    if kind == "ivf" and isinstance(index, faiss.Index):
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
    return None  # binary IVF takes no search parameters


def _float_exact(
    col: Collection, q: np.ndarray, k: int, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    scores = q @ np.asarray(col.vectors[allowed], dtype=np.float32).T
    return _topk_dense(scores, allowed, k, higher_better=True)


def _hamming_exact(
    col: Collection, codes: np.ndarray, k: int, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    sub = faiss.IndexBinaryFlat(col.codes.shape[1] * 8)
    sub.add(np.ascontiguousarray(col.codes[allowed]))
    dist, idx = sub.search(codes, min(k, len(allowed)))
    pos = np.where(idx >= 0, allowed[np.maximum(idx, 0)], -1)
    return dist, pos


def _search(
    col: Collection, family: str, queries: np.ndarray, k: int, allowed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores or distances, positions)`` of the ``k`` best rows, unsorted ties."""
    index = col.float_index if family == "float" else col.binary_index
    kind = col.info.float_kind if family == "float" else col.info.binary_kind
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
    params = _params(index, kind, selector) if len(allowed) > EXACT_FILTER_MAX else None
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

    Returns:
        ``(positions [q, k'], scores [q, k'] float32, distances [q, k'] int32 or None)`` with
        ``k' = min(k, rows allowed)``, best first.
    """
    if mode == "float":
        factor = rerank_factor(col)
        if factor > 1:  # IVF-PQ: PQ scores pick candidates, exact inner products rank them
            _, pos = _search(col, "float", vectors, k * factor, allowed)  # type: ignore[arg-type]
            pos, scores, _ = rerank_exact(col, vectors, pos, k)  # type: ignore[arg-type]
            return pos, scores, None
        scores, pos = _search(col, "float", vectors, k, allowed)  # type: ignore[arg-type]
        scores, pos = _sorted(scores, pos, higher_better=True)
        return pos, scores, None
    dist, pos = _search(col, "binary", codes, k if mode == "hamming" else candidates, allowed)  # type: ignore[arg-type]
    dist, pos = _sorted(dist, pos, higher_better=False)
    dist = np.where(pos < 0, -1, dist).astype(np.int32, copy=False)
    if mode == "hamming":
        scores = np.where(pos < 0, -np.inf, (-dist).astype(np.float32)).astype(np.float32)  # 0, not -0
        return pos, scores, dist
    return rerank_exact(col, vectors, pos, k, dist)  # type: ignore[arg-type]


def rerank_factor(col: Collection) -> int:
    """How many PQ candidates per wanted row an IVF-PQ float index re-ranks exactly (0: none)."""
    if col.info.float_kind != "ivf":
        return 0
    return int(col.info.params.get("float", {}).get("rerank_factor", 0))


def rerank_exact(
    col: Collection,
    vectors: np.ndarray,
    cand: np.ndarray,
    k: int,
    dist: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best of candidate positions ``cand`` (``-1``: none) by exact inner product with
    the collection's stored float rows: ``(positions, scores, distances)``, best first, ties by
    position; ``distances`` carries the candidates' Hamming distances along (``-1`` without)."""
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
        scores[block < 0] = -np.inf
        key = np.where(block < 0, np.inf, -scores.astype(np.float64))
        if k < c:
            kth = np.partition(key, k - 1, axis=1)[:, k - 1 : k]
            key = np.where(key <= kth, key, np.inf)
        order = np.lexsort((np.where(block < 0, np.iinfo(np.int64).max, block), key), axis=1)[:, :k]
        out_pos[a:b] = np.take_along_axis(block, order, 1)
        out_score[a:b] = np.take_along_axis(scores, order, 1)
        out_dist[a:b] = np.take_along_axis(dist[a:b], order, 1)
    return out_pos, out_score, out_dist

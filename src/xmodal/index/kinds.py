"""FAISS index kinds: which one for how many items, how to build, grow, shrink, read and write them.

Every collection (image rows, caption rows) has one float index over its embeddings (inner
product = cosine on normalised vectors) and one binary index over its packed codes (Hamming):

========  ==================================  =====================================
kind      float                               binary
========  ==================================  =====================================
``flat``  ``IndexFlatIP`` (exact)             ``IndexBinaryFlat`` (exact)
``hnsw``  ``IndexHNSWFlat`` (graph)           ``IndexBinaryHNSW`` (graph)
``ivf``   ``IndexIVFPQ`` (clusters + PQ)      ``IndexBinaryIVF`` (clusters)
========  ==================================  =====================================

``auto`` (:func:`choose_kind`), by the collection's size when the index is built:

* float: ``flat`` below 100,000 rows (an exact scan of 100k x 256 floats takes a few ms per
  query), ``hnsw`` from 100,000 to 2,000,000 (high recall; memory ~ d x 4 + 2 x M x 4 bytes per
  row), ``ivf`` (IVF-PQ, ``d / 4`` bytes per row) from 2,000,000 on.
* binary: ``flat`` below 10,000,000 rows (an exact Hamming scan streams 8 bytes per row at 64
  bits: 1M rows is 8 MB, a few ms per query; see docs/benchmarks.md), ``ivf`` from then on.

Labels inside every FAISS index are **row positions** (0..n-1); the collection's ``ids.npy``
maps positions to stable int64 ids. Flat and HNSW indexes get positions by insertion order; IVF
indexes get them explicitly. Removing rows renumbers positions: flat indexes compact in place
(``remove_ids`` keeps order), HNSW graphs are rebuilt from their stored vectors, IVF lists are
refilled with the trained quantizer kept.

IVF indexes keep no exact copy of the rows, so a raw array is stored beside them
(``vectors.npy`` for IVF-PQ, ``codes.npy`` for binary IVF); flat and HNSW indexes serve their
rows from their own storage (:func:`stored_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

__all__ = [
    "AUTO_BINARY_IVF_FROM",
    "AUTO_FLAT_BELOW",
    "AUTO_FLOAT_IVF_FROM",
    "KINDS",
    "Kind",
    "add_rows",
    "choose_kind",
    "default_params",
    "new_index",
    "read_faiss",
    "remove_rows",
    "set_search_params",
    "stored_rows",
    "write_faiss",
]

Kind = Literal["auto", "flat", "hnsw", "ivf"]
Family = Literal["float", "binary"]
KINDS = ("auto", "flat", "hnsw", "ivf")

#: ``auto`` uses exact (flat) indexes below this many rows.
AUTO_FLAT_BELOW = 100_000
#: ``auto`` switches float indexes from HNSW to IVF-PQ at this many rows.
AUTO_FLOAT_IVF_FROM = 2_000_000
#: ``auto`` switches binary indexes from flat to IVF at this many rows.
AUTO_BINARY_IVF_FROM = 10_000_000

#: Fewest rows an IVF index is trained on (FAISS warns below ~39 per cluster; PQ needs 256).
IVF_MIN_ROWS = 1_000
#: Rows used to train IVF quantizers at most.
IVF_TRAIN_MAX = 200_000


def choose_kind(kind: str, family: Family, rows: int) -> str:
    """The concrete kind for a requested one (``auto`` decides by ``rows``, see module docs).

    Raises:
        ValueError: unknown kind, or ``ivf`` for fewer than :data:`IVF_MIN_ROWS` rows.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if kind == "auto":
        if rows < AUTO_FLAT_BELOW:
            return "flat"
        if family == "float":
            return "hnsw" if rows < AUTO_FLOAT_IVF_FROM else "ivf"
        return "flat" if rows < AUTO_BINARY_IVF_FROM else "ivf"
    if kind == "ivf" and rows < IVF_MIN_ROWS:
        raise ValueError(
            f"kind 'ivf' needs at least {IVF_MIN_ROWS} rows to train its clusters, got {rows}; "
            "use 'flat' (exact) for small collections"
        )
    return kind


def default_params(kind: str, family: Family, rows: int, width: int) -> dict[str, Any]:
    """Build and search parameters for a new index of ``rows`` rows.

    ``width`` is the embedding size (float) or the code length in bits (binary). HNSW: ``M`` 32,
    ``ef_construction`` 64, ``ef_search`` 128 (float); ``M`` 16 (binary). IVF: ``nlist`` about
    ``4 sqrt(rows)`` (at most ``rows / 39``), ``nprobe`` 32; IVF-PQ ``m`` the largest divisor of
    ``d`` not above ``d / 4``, 8 bits per sub-vector (fewer below 10,000 rows, so that each
    centroid is trained on >= 39 rows), and ``rerank_factor`` 10: a float search fetches
    ``10 k`` rows by their PQ scores and returns the ``k`` best by exact inner product with the
    float rows stored beside the index (``0`` or ``1``: PQ scores only).
    """
    if kind == "flat":
        return {}
    if kind == "hnsw":
        m = 32 if family == "float" else 16
        return {"M": m, "ef_construction": 64, "ef_search": 128}
    nlist = max(1, min(round(4 * math.sqrt(max(rows, 1))), rows // 39))
    params: dict[str, Any] = {"nlist": nlist, "nprobe": min(32, nlist)}
    if family == "float":
        params["pq_m"] = max(m for m in range(1, max(1, width // 4) + 1) if width % m == 0)
        # 2**pq_bits centroids per sub-quantizer, each trained on >= 39 rows
        params["pq_bits"] = int(max(1, min(8, math.floor(math.log2(max(rows, 78) / 39)))))
        params["rerank_factor"] = 10
    return params


def new_index(
    kind: str, family: Family, width: int, params: Mapping[str, Any], train: np.ndarray | None
) -> Any:
    """An empty FAISS index of ``kind`` (trained on ``train`` when it needs training)."""
    if family == "float":
        if kind == "flat":
            index: Any = faiss.IndexFlatIP(width)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(width, int(params["M"]), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(params["ef_construction"])
        elif kind == "ivf":
            quantizer = faiss.IndexFlatIP(width)
            index = faiss.IndexIVFPQ(
                quantizer,
                width,
                int(params["nlist"]),
                int(params["pq_m"]),
                int(params["pq_bits"]),
                faiss.METRIC_INNER_PRODUCT,
            )
            index.own_fields = True
            quantizer.this.disown()
        else:
            raise ValueError(f"unknown kind {kind!r}")
    else:
        if kind == "flat":
            index = faiss.IndexBinaryFlat(width)
        elif kind == "hnsw":
            index = faiss.IndexBinaryHNSW(width, int(params["M"]))
            index.hnsw.efConstruction = int(params["ef_construction"])
        elif kind == "ivf":
            quantizer = faiss.IndexBinaryFlat(width)
            index = faiss.IndexBinaryIVF(quantizer, width, int(params["nlist"]))
            index.own_fields = True
            quantizer.this.disown()
        else:
            raise ValueError(f"unknown kind {kind!r}")
    if kind == "ivf":
        if train is None or len(train) < IVF_MIN_ROWS:
            raise ValueError(f"an ivf index needs at least {IVF_MIN_ROWS} training rows")
        if len(train) > IVF_TRAIN_MAX:
            pick = np.random.default_rng(0).choice(len(train), IVF_TRAIN_MAX, replace=False)
            train = train[np.sort(pick)]
        index.train(np.ascontiguousarray(train))
    set_search_params(index, kind, params)
    return index


def set_search_params(index: Any, kind: str, params: Mapping[str, Any]) -> None:
    """Apply the search-time parameters (``ef_search``, ``nprobe``) stored with an index."""
    if kind == "hnsw" and "ef_search" in params:
        index.hnsw.efSearch = int(params["ef_search"])
    if kind == "ivf" and "nprobe" in params:
        index.nprobe = int(params["nprobe"])


def add_rows(index: Any, kind: str, rows: np.ndarray) -> None:
    """Append ``rows`` at positions ``ntotal ..`` (explicit labels for IVF)."""
    if len(rows) == 0:
        return
    rows = np.ascontiguousarray(rows)
    if kind == "ivf":
        start = index.ntotal
        index.add_with_ids(rows, np.arange(start, start + len(rows), dtype=np.int64))
    else:
        index.add(rows)


def remove_rows(
    index: Any,
    kind: str,
    family: Family,
    keep: np.ndarray,
    raw: np.ndarray,
    params: Mapping[str, Any],
) -> Any:
    """The index with only the rows at positions ``keep`` (ascending), renumbered 0..len(keep)-1.

    ``raw`` holds every current row (positions 0..n-1); it feeds the rebuilt HNSW graph or the
    refilled IVF lists. Returns the (possibly new) index object.
    """
    n = index.ntotal
    drop = np.setdiff1d(np.arange(n, dtype=np.int64), keep, assume_unique=True)
    if len(drop) == 0:
        return index
    if kind == "flat":
        index.remove_ids(faiss.IDSelectorBatch(drop))  # compacts, order kept
        return index
    kept = np.ascontiguousarray(raw[keep])
    if kind == "hnsw":
        fresh = new_index(kind, family, _width(index, family), params, None)
        add_rows(fresh, kind, kept)
        return fresh
    index.reset()  # ivf: trained quantizer (and PQ codebooks) stay
    add_rows(index, kind, kept)
    return index


def _width(index: Any, family: Family) -> int:
    return int(index.d)


def stored_rows(index: Any, family: Family) -> np.ndarray | None:
    """A read-only view of the exact rows a flat or HNSW index stores (``None`` for IVF).

    Float rows are ``[n, d]`` float32, binary rows ``[n, d / 8]`` uint8. The view shares the
    index's memory (memory-mapped when the index was read with mmap); keep the index alive
    while using it.
    """
    if family == "float":
        idx = index
        if isinstance(idx, faiss.IndexHNSW):
            idx = faiss.downcast_index(idx.storage)
        if not isinstance(idx, faiss.IndexFlat):
            return None
        n, d = idx.ntotal, idx.d
        if n == 0:
            return np.zeros((0, d), dtype=np.float32)
        view = faiss.rev_swig_ptr(idx.get_xb(), n * d).reshape(n, d)
    else:
        idx = index
        if isinstance(idx, faiss.IndexBinaryHNSW):
            idx = faiss.downcast_IndexBinary(idx.storage)
        if not isinstance(idx, faiss.IndexBinaryFlat):
            return None
        n, size = idx.ntotal, idx.code_size
        if n == 0:
            return np.zeros((0, size), dtype=np.uint8)
        view = faiss.rev_swig_ptr(idx.xb.data(), n * size).reshape(n, size)
    view.flags.writeable = False
    return view


def read_faiss(path: Path, family: Family, kind: str, mmap: bool) -> Any:
    """Read an index file; with ``mmap`` the bulk of it is memory-mapped, not loaded.

    Flat and HNSW storage is mapped with ``IO_FLAG_MMAP_IFC``; IVF inverted lists with
    ``IO_FLAG_MMAP`` (on-disk inverted lists). Without ``mmap`` the index is read into memory
    and can be modified (what writers do).
    """
    flags = 0
    if mmap:
        flags = (
            faiss.IO_FLAG_MMAP
            if kind == "ivf"
            else faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
        )
    reader = faiss.read_index if family == "float" else faiss.read_index_binary
    return reader(str(path), flags)


def write_faiss(index: Any, path: Path, family: Family) -> None:
    """Write an index file (not fsynced; the caller syncs the version folder)."""
    if family == "float":
        faiss.write_index(index, str(path))
    else:
        faiss.write_index_binary(index, str(path))

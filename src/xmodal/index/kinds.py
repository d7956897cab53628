"""FAISS index kinds as objects: one :class:`IndexKind` per FAISS index, found by name.

Every collection (image rows, caption rows) has one float index over its embeddings (inner
product = cosine on normalised vectors) and one binary index over its packed codes (Hamming).
The kinds registered here:

========  ==================================  =====================================
name      float                               binary
========  ==================================  =====================================
``flat``  :class:`FloatFlat`  ``IndexFlatIP``  :class:`BinaryFlat` ``IndexBinaryFlat``
``hnsw``  :class:`FloatHNSW` ``IndexHNSWFlat`` :class:`BinaryHNSW` ``IndexBinaryHNSW``
``ivf``   :class:`FloatIVFPQ` ``IndexIVFPQ``   :class:`BinaryIVF` ``IndexBinaryIVF``
========  ==================================  =====================================

A kind holds everything the index, search and distributed code need to know about it: its
default parameters, how to build (and train) an empty index, add rows, remove rows, read the
exact rows it stores, set its search-time parameters, build filtered-search parameters, the
flags it is read with, and how many candidates per wanted row a float search re-ranks exactly.
Adding a kind is one subclass plus :func:`register_kind`; nothing else changes::

    class FloatIVFFlat(IVFKind):
        name, family = "ivfflat", "float"
        def build(self, width, params, train): ...

    register_kind(FloatIVFFlat())
    create_index(folder, items, codes=..., model=..., float_kind="ivfflat")

``auto`` (:func:`choose_kind`) picks, among a family's kinds that declare ``auto_from``, the
one with the largest ``auto_from`` not above the collection's size:

* float: ``flat`` below 100,000 rows (an exact scan of 100k x 256 floats takes a few ms per
  query), ``hnsw`` from 100,000 to 2,000,000 (high recall; memory ~ d x 4 + 2 x M x 4 bytes per
  row), ``ivf`` (IVF-PQ, ``d / 4`` bytes per row) from 2,000,000 on.
* binary: ``flat`` below 10,000,000 rows (an exact Hamming scan streams 8 bytes per row at 64
  bits: 1M rows is 8 MB, a few ms per query; see docs/benchmarks.md), ``ivf`` from then on.

Labels inside every FAISS index are **row positions** (0..n-1); the collection's ``ids.npy``
maps positions to stable int64 ids. Kinds that number rows by insertion order (flat, HNSW) get
positions that way; kinds with ``takes_ids`` (IVF) get them explicitly. Removing rows renumbers
positions: flat indexes compact in place (``remove_ids`` keeps order), HNSW graphs are rebuilt
from their stored vectors, IVF lists are refilled with the trained quantizer kept.

Kinds whose :meth:`IndexKind.stored_rows` is ``None`` (IVF) keep no exact copy of the rows, so
a raw array is stored beside them (``vectors.npy`` for float, ``codes.npy`` for binary).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import faiss
import numpy as np

__all__ = [
    "AUTO_BINARY_IVF_FROM",
    "AUTO_FLAT_BELOW",
    "AUTO_FLOAT_IVF_FROM",
    "IVF_MIN_ROWS",
    "IVF_TRAIN_MAX",
    "BinaryFlat",
    "BinaryHNSW",
    "BinaryIVF",
    "Family",
    "FloatFlat",
    "FloatHNSW",
    "FloatIVFPQ",
    "HNSWKind",
    "IVFKind",
    "IndexKind",
    "choose_kind",
    "get_kind",
    "kind_names",
    "register_kind",
    "unregister_kind",
]

Family = Literal["float", "binary"]
FAMILIES: tuple[Family, ...] = ("float", "binary")

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

#: FAISS untyped: its bundled hints miss the SWIG keyword constructors of the search parameters
#: and some attributes (``IndexBinaryFlat.xb``).
_faiss: Any = faiss


class IndexKind:
    """One FAISS index kind of one family (float or binary); subclass it to add a kind.

    Class attributes:
        name: The name users pass (``kind="hnsw"``); unique within a family.
        family: ``float`` (inner product over float32 rows) or ``binary`` (Hamming over packed
            uint8 codes).
        auto_from: ``auto`` picks this kind from this many rows on (``None``: never).
        min_rows: Fewest rows an index of this kind is built from (training needs them).
        takes_ids: Rows are added with explicit labels (``add_with_ids``), not numbered by
            insertion order.
        merges: Indexes built from one trained template merge into one (``merge_from``).
    """

    name: ClassVar[str]
    family: ClassVar[Family]
    auto_from: ClassVar[int | None] = None
    min_rows: ClassVar[int] = 0
    takes_ids: ClassVar[bool] = False
    merges: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, family={self.family!r})"

    # --- building -----------------------------------------------------------------------------
    def default_params(self, rows: int, width: int) -> dict[str, Any]:
        """Build and search parameters for a new index of ``rows`` rows of ``width``
        (embedding size for float, code length in bits for binary)."""
        return {}

    def build(self, width: int, params: Mapping[str, Any], train: np.ndarray | None) -> Any:
        """An empty FAISS index (trained on ``train`` when the kind needs training)."""
        raise NotImplementedError

    def new_index(self, width: int, params: Mapping[str, Any], train: np.ndarray | None) -> Any:
        """:meth:`build`, with the search-time parameters applied."""
        index = self.build(width, params, train)
        self.set_search_params(index, params)
        return index

    def add(self, index: Any, rows: np.ndarray, start: int | None = None) -> None:
        """Append ``rows`` at positions ``start ..`` (default ``ntotal``).

        Kinds without ``takes_ids`` number rows by insertion order, so ``start`` must then be
        ``ntotal`` (wrap them in ``faiss.IndexIDMap2`` for other labels).
        """
        if len(rows) == 0:
            return
        rows = np.ascontiguousarray(rows)
        first = index.ntotal if start is None else start
        if self.takes_ids or start is not None:
            index.add_with_ids(rows, np.arange(first, first + len(rows), dtype=np.int64))
        else:
            index.add(rows)

    def remove(
        self, index: Any, keep: np.ndarray, raw: np.ndarray, params: Mapping[str, Any]
    ) -> Any:
        """The index with only the rows at positions ``keep`` (ascending), renumbered
        ``0..len(keep)-1``; ``raw`` holds every current row. Returns the (possibly new) index.

        The default rebuilds the index from the kept rows (fine for kinds without training).
        """
        if len(keep) == index.ntotal:
            return index
        fresh = self.new_index(int(index.d), params, None)
        self.add(fresh, np.ascontiguousarray(raw[keep]))
        return fresh

    # --- rows, search, files ------------------------------------------------------------------
    def stored_rows(self, index: Any) -> np.ndarray | None:
        """A read-only view of the exact rows the index stores (``None``: it keeps none, so a
        raw array is stored beside it). The view shares the index's memory; keep it alive."""
        return None

    def set_search_params(self, index: Any, params: Mapping[str, Any]) -> None:
        """Apply the search-time parameters stored with an index (``ef_search``, ``nprobe``)."""

    def search_parameters(self, index: Any, selector: Any) -> Any | None:
        """FAISS search parameters carrying ``selector`` and the index's own search settings
        (``None``: the kind cannot filter, so filtered searches run exactly)."""
        return None

    def rerank_factor(self, params: Mapping[str, Any]) -> int:
        """Candidates per wanted row that a float search re-ranks by exact inner product
        (``0`` or ``1``: the index's own scores are final)."""
        return 0

    def read_flags(self, mmap: bool) -> int:
        """FAISS I/O flags to read an index file with (``mmap``: map its bulk, do not load it;
        default: flat storage mapped with ``IO_FLAG_MMAP_IFC``, read-only)."""
        return faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0

    def read(self, path: Path, mmap: bool) -> Any:
        """Read an index file; without ``mmap`` it is loaded and can be modified."""
        reader = faiss.read_index if self.family == "float" else faiss.read_index_binary
        return reader(str(path), self.read_flags(mmap))

    def write(self, index: Any, path: Path) -> None:
        """Write an index file (not fsynced; the caller syncs the version folder)."""
        if self.family == "float":
            faiss.write_index(index, str(path))
        else:
            faiss.write_index_binary(index, str(path))


def _flat_rows(index: Any, family: Family) -> np.ndarray | None:
    """The rows of a flat index (or of the flat storage of an HNSW graph), read-only."""
    if family == "float":
        if isinstance(index, faiss.IndexHNSW):
            index = faiss.downcast_index(index.storage)
        if not isinstance(index, faiss.IndexFlat):
            return None
        n, d = index.ntotal, index.d
        if n == 0:
            return np.zeros((0, d), dtype=np.float32)
        view = faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)
    else:
        if isinstance(index, faiss.IndexBinaryHNSW):
            index = faiss.downcast_IndexBinary(index.storage)
        if not isinstance(index, faiss.IndexBinaryFlat):
            return None
        n, size = index.ntotal, index.code_size
        if n == 0:
            return np.zeros((0, size), dtype=np.uint8)
        storage: Any = index  # typed without its xb vector
        view = faiss.rev_swig_ptr(storage.xb.data(), n * size).reshape(n, size)
    view.flags.writeable = False
    return view


class FlatKind(IndexKind):
    """Exact search over rows stored in order; removal compacts in place."""

    name = "flat"
    auto_from = 0

    def remove(
        self, index: Any, keep: np.ndarray, raw: np.ndarray, params: Mapping[str, Any]
    ) -> Any:
        drop = np.setdiff1d(np.arange(index.ntotal, dtype=np.int64), keep, assume_unique=True)
        if len(drop):
            index.remove_ids(faiss.IDSelectorBatch(drop))  # compacts, order kept
        return index

    def stored_rows(self, index: Any) -> np.ndarray | None:
        return _flat_rows(index, self.family)

    def search_parameters(self, index: Any, selector: Any) -> Any | None:
        return _faiss.SearchParameters(sel=selector)


class FloatFlat(FlatKind):
    """``IndexFlatIP``: exact inner product."""

    family = "float"

    def build(self, width: int, params: Mapping[str, Any], train: np.ndarray | None) -> Any:
        return faiss.IndexFlatIP(width)


class BinaryFlat(FlatKind):
    """``IndexBinaryFlat``: exact Hamming distance."""

    family = "binary"

    def build(self, width: int, params: Mapping[str, Any], train: np.ndarray | None) -> Any:
        return faiss.IndexBinaryFlat(width)


class HNSWKind(IndexKind):
    """A graph over flat storage: ``M`` links per node, ``ef_construction`` / ``ef_search``
    candidate lists; removing rows rebuilds the graph from the stored rows."""

    name = "hnsw"
    default_m: ClassVar[int] = 32

    def default_params(self, rows: int, width: int) -> dict[str, Any]:
        return {"M": self.default_m, "ef_construction": 64, "ef_search": 128}

    def stored_rows(self, index: Any) -> np.ndarray | None:
        return _flat_rows(index, self.family)

    def set_search_params(self, index: Any, params: Mapping[str, Any]) -> None:
        if "ef_search" in params:
            index.hnsw.efSearch = int(params["ef_search"])

    def search_parameters(self, index: Any, selector: Any) -> Any | None:
        return _faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)


class FloatHNSW(HNSWKind):
    """``IndexHNSWFlat`` (inner product), ``M`` 32; ``auto`` from 100,000 rows."""

    family = "float"
    auto_from = AUTO_FLAT_BELOW

    def build(self, width: int, params: Mapping[str, Any], train: np.ndarray | None) -> Any:
        index = faiss.IndexHNSWFlat(width, int(params["M"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(params["ef_construction"])
        return index


class BinaryHNSW(HNSWKind):
    """``IndexBinaryHNSW``, ``M`` 16 (never picked by ``auto``)."""

    family = "binary"
    default_m = 16

    def build(self, width: int, params: Mapping[str, Any], train: np.ndarray | None) -> Any:
        index = faiss.IndexBinaryHNSW(width, int(params["M"]))
        index.hnsw.efConstruction = int(params["ef_construction"])
        return index


def _ivf_nlist(rows: int) -> int:
    """About ``4 sqrt(rows)`` clusters, at most ``rows / 39`` (FAISS's rows per centroid)."""
    return max(1, min(round(4 * math.sqrt(max(rows, 1))), rows // 39))


class IVFKind(IndexKind):
    """Inverted lists over a trained coarse quantizer: ``nlist`` clusters, ``nprobe`` searched.

    Trained on at most :data:`IVF_TRAIN_MAX` rows (a fixed-seed sample); needs at least
    :data:`IVF_MIN_ROWS`. Rows carry explicit labels; removing rows refills the lists with the
    trained quantizer kept. Lists are memory-mapped with ``IO_FLAG_MMAP`` (on-disk lists).
    Subclasses give :meth:`empty` (the untrained index).
    """

    name = "ivf"
    min_rows = IVF_MIN_ROWS
    takes_ids = True
    merges = True

    def default_params(self, rows: int, width: int) -> dict[str, Any]:
        nlist = _ivf_nlist(rows)
        return {"nlist": nlist, "nprobe": min(32, nlist)}

    def empty(self, width: int, params: Mapping[str, Any]) -> Any:
        """The untrained index."""
        raise NotImplementedError

    def build(self, width: int, params: Mapping[str, Any], train: np.ndarray | None) -> Any:
        if train is None or len(train) < IVF_MIN_ROWS:
            raise ValueError(f"an {self.name} index needs at least {IVF_MIN_ROWS} training rows")
        if len(train) > IVF_TRAIN_MAX:
            pick = np.random.default_rng(0).choice(len(train), IVF_TRAIN_MAX, replace=False)
            train = train[np.sort(pick)]
        index = self.empty(width, params)
        index.train(np.ascontiguousarray(train))
        return index

    def remove(
        self, index: Any, keep: np.ndarray, raw: np.ndarray, params: Mapping[str, Any]
    ) -> Any:
        if len(keep) == index.ntotal:
            return index
        kept = np.ascontiguousarray(raw[keep])
        index.reset()  # the trained quantizer (and PQ codebooks) stay
        self.add(index, kept)
        return index

    def set_search_params(self, index: Any, params: Mapping[str, Any]) -> None:
        if "nprobe" in params:
            index.nprobe = int(params["nprobe"])

    def read_flags(self, mmap: bool) -> int:
        return faiss.IO_FLAG_MMAP if mmap else 0


def _own_quantizer(index: Any, quantizer: Any) -> Any:
    index.own_fields = True
    quantizer.this.disown()
    return index


class FloatIVFPQ(IVFKind):
    """``IndexIVFPQ``: clusters + product quantisation, re-ranked exactly; ``auto`` from 2M rows.

    ``pq_m`` is the largest divisor of ``d`` not above ``d / 4``, 8 bits per sub-vector (fewer
    below 10,000 rows, so that each centroid is trained on >= 39 rows), and ``rerank_factor``
    10: a float search fetches ``10 k`` rows by their PQ scores and returns the ``k`` best by
    exact inner product with the float rows stored beside the index (``0`` or ``1``: PQ scores
    only).
    """

    family = "float"
    auto_from = AUTO_FLOAT_IVF_FROM

    def default_params(self, rows: int, width: int) -> dict[str, Any]:
        params = super().default_params(rows, width)
        params["pq_m"] = max(m for m in range(1, max(1, width // 4) + 1) if width % m == 0)
        # 2**pq_bits centroids per sub-quantizer, each trained on >= 39 rows
        params["pq_bits"] = int(max(1, min(8, math.floor(math.log2(max(rows, 78) / 39)))))
        params["rerank_factor"] = 10
        return params

    def empty(self, width: int, params: Mapping[str, Any]) -> Any:
        quantizer = faiss.IndexFlatIP(width)
        index = faiss.IndexIVFPQ(
            quantizer,
            width,
            int(params["nlist"]),
            int(params["pq_m"]),
            int(params["pq_bits"]),
            faiss.METRIC_INNER_PRODUCT,
        )
        return _own_quantizer(index, quantizer)

    def search_parameters(self, index: Any, selector: Any) -> Any | None:
        return _faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)

    def rerank_factor(self, params: Mapping[str, Any]) -> int:
        return int(params.get("rerank_factor", 0))


class BinaryIVF(IVFKind):
    """``IndexBinaryIVF``: Hamming clusters; ``auto`` from 10M rows; filtered searches run
    exactly (it takes no search parameters)."""

    family = "binary"
    auto_from = AUTO_BINARY_IVF_FROM

    def empty(self, width: int, params: Mapping[str, Any]) -> Any:
        quantizer = faiss.IndexBinaryFlat(width)
        index = faiss.IndexBinaryIVF(quantizer, width, int(params["nlist"]))
        return _own_quantizer(index, quantizer)


# --- the registry ------------------------------------------------------------------------------
_REGISTRY: dict[tuple[str, str], IndexKind] = {}


def register_kind(kind: IndexKind, *, replace: bool = False) -> IndexKind:
    """Make ``kind`` available by its name within its family; returns it.

    Raises:
        ValueError: the name is ``auto`` or already taken (unless ``replace``, which warns).
    """
    if kind.family not in FAMILIES:
        raise ValueError(f"family must be float or binary, got {kind.family!r}")
    if kind.name == "auto" or not kind.name:
        raise ValueError(f"{kind!r}: 'auto' and empty names are reserved")
    key = (kind.family, kind.name)
    if key in _REGISTRY:
        if not replace:
            raise ValueError(
                f"a {kind.family} index kind named {kind.name!r} exists ({_REGISTRY[key]!r}); "
                "pass replace=True to replace it"
            )
        warnings.warn(f"replacing the {kind.family} index kind {kind.name!r}", stacklevel=2)
    _REGISTRY[key] = kind
    return kind


def unregister_kind(family: Family, name: str) -> None:
    """Remove a registered kind (no error when absent)."""
    _REGISTRY.pop((family, name), None)


def kind_names(family: Family | None = None) -> tuple[str, ...]:
    """Registered kind names (of one family, or of either), sorted; ``auto`` not included."""
    return tuple(sorted({n for f, n in _REGISTRY if family is None or f == family}))


def get_kind(family: Family, name: str) -> IndexKind:
    """The registered kind ``name`` of ``family``.

    Raises:
        ValueError: no such kind (the message lists the registered ones).
    """
    try:
        return _REGISTRY[(family, name)]
    except KeyError:
        names = ", ".join(("auto", *kind_names(family)))
        raise ValueError(f"{family} kind must be one of {names}; got {name!r}") from None


def choose_kind(kind: str, family: Family, rows: int) -> IndexKind:
    """The concrete kind for a requested name; ``auto`` decides by ``rows`` (module docs).

    Raises:
        ValueError: unknown kind, or one that needs more rows than ``rows``.
    """
    if kind == "auto":
        eligible = [
            k
            for (f, _), k in _REGISTRY.items()
            if f == family and k.auto_from is not None and k.auto_from <= rows
        ]
        if not eligible:
            raise ValueError(f"no registered {family} index kind is chosen by auto for {rows} rows")
        return max(eligible, key=lambda k: k.auto_from or 0)
    chosen = get_kind(family, kind)
    if rows < chosen.min_rows:
        raise ValueError(
            f"kind {kind!r} needs at least {chosen.min_rows} rows to train its clusters, got "
            f"{rows}; use 'flat' (exact) for small collections"
        )
    return chosen


for _kind in (FloatFlat(), FloatHNSW(), FloatIVFPQ(), BinaryFlat(), BinaryHNSW(), BinaryIVF()):
    register_kind(_kind)
del _kind

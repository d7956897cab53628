"""Float indexes built as shards in parallel, searched as shards or merged (IVF).

::

    from xmodal.distributed import ShardedIndex, build_sharded

    build_sharded(vectors, "indexes/big.shards", shards=8, kind="flat", ray=True)
    index = ShardedIndex.open("indexes/big.shards")
    scores, positions = index.search(queries, k=10)     # same ranking as one flat index

Rows are split into contiguous shards; shard ``s`` holds rows ``[start_s, stop_s)`` and labels
them by their **global** row position, so a merged ranking is a ranking of the whole collection.
Each shard is built by its own task: a Ray task when ``ray=True`` (on a cluster the output folder
must be shared storage), else a thread (FAISS releases the GIL). IVF shards are copies of one
quantizer trained once on a sample of all rows; :func:`merge_ivf` merges them into one IVF index
identical to one built in a single process with the same quantizer. Every kind is handled through
its :class:`~xmodal.index.kinds.IndexKind`: one template (trained once where the kind trains)
is copied into every shard; kinds that number rows by insertion order are wrapped in
``IndexIDMap2`` to carry global labels.

Searching merges the shards' top-``k`` lists (:func:`merge_topk`): best score first, equal scores
by global position — the order :class:`xmodal.search.Searcher` gives a single index — so a flat
sharded search equals a flat single-index search.

Layout::

    <folder>/sharded.json       # kind, dim, rows, params, shard bounds
    <folder>/shard-00000.faiss  # rows [0, stop_0)
    <folder>/merged.faiss       # kinds that merge (IVF), after merge_ivf
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from xmodal.index.kinds import IndexKind, choose_kind, get_kind
from xmodal.io import write_json_atomic
from xmodal.search.ranking import top_k

__all__ = [
    "ShardedIndex",
    "build_sharded",
    "merge_ivf",
    "merge_topk",
    "shard_bounds",
]

MANIFEST = "sharded.json"
MERGED = "merged.faiss"


def shard_bounds(rows: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ``(start, stop)`` ranges covering ``rows`` rows, sizes within one.

    Example:
        >>> shard_bounds(10, 3)
        [(0, 3), (3, 6), (6, 10)]
    """
    if rows < 0 or shards < 1:
        raise ValueError(f"need rows >= 0 and shards >= 1, got {rows}, {shards}")
    shards = min(shards, max(rows, 1))
    edges = [rows * s // shards for s in range(shards + 1)]
    return list(itertools.pairwise(edges))


def merge_topk(
    scores: Sequence[np.ndarray], positions: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard ``[q, k_s]`` results into the global ``[q, k]`` top-k.

    Ranked by :func:`xmodal.search.ranking.top_k`: best (highest) score first; equal scores by
    ascending global position; padding (position ``-1``) last, with score ``-inf``.
    """
    if len(scores) != len(positions) or not scores:
        raise ValueError("give one scores and one positions array per shard (at least one)")
    s = np.concatenate([np.asarray(x, dtype=np.float32) for x in scores], axis=1)
    p = np.concatenate([np.asarray(x, dtype=np.int64) for x in positions], axis=1)
    return top_k(s, p, k)


def _shard_file(folder: Path, shard: int) -> Path:
    return folder / f"shard-{shard:05d}.faiss"


def _build_one(template: bytes, kind: IndexKind, rows: np.ndarray, start: int, path: str) -> int:
    """Build one shard (labels = global positions ``start ..``) and write it; returns its rows.

    ``template`` is the serialised empty (trained) index every shard starts from.
    """
    index = faiss.deserialize_index(np.frombuffer(template, dtype=np.uint8))
    if not kind.takes_ids:
        index = faiss.IndexIDMap2(index)
    kind.add(index, np.ascontiguousarray(rows, dtype=np.float32), start)
    kind.write(index, Path(path))
    return int(index.ntotal)


def build_sharded(
    vectors: np.ndarray,
    folder: str | Path,
    *,
    shards: int,
    kind: str = "flat",
    params: Mapping[str, Any] | None = None,
    ray: bool = False,
    address: str | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Build one float index per shard of ``vectors`` (in parallel) into ``folder``.

    Args:
        vectors: ``[n, d]`` float32 L2-normalised embeddings (inner product = cosine).
        folder: Output folder (created; existing shard files are replaced).
        shards: Number of shards.
        kind: A float kind name (:mod:`xmodal.index.kinds`); ``auto`` decides by the size of
            one shard.
        params: Overrides of the kind's default parameters (computed for the whole collection:
            for IVF, all shards share one quantizer).
        ray: Build each shard in a Ray task (connects to ``address``, or starts a local Ray).
        address: Ray cluster address (with ``ray``).
        workers: Threads without Ray (default: ``min(shards, cpu count)``).

    Returns:
        The manifest written to ``folder/sharded.json``.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"vectors must be a non-empty [n, d] array, got shape {vectors.shape}")
    n, dim = vectors.shape
    bounds = shard_bounds(n, shards)
    chosen = choose_kind(kind, "float", -(-n // len(bounds)) if kind == "auto" else n)
    p = chosen.default_params(n, dim)
    p.update(params or {})
    train = np.ascontiguousarray(vectors, dtype=np.float32) if chosen.min_rows else None
    template = bytes(faiss.serialize_index(chosen.new_index(dim, p, train)))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MERGED).unlink(missing_ok=True)
    jobs = [(start, stop, str(_shard_file(folder, s))) for s, (start, stop) in enumerate(bounds)]
    if ray:
        counts = _build_with_ray(vectors, template, chosen, jobs, address)
    else:
        import os

        pool = workers or min(len(jobs), os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=pool) as ex:
            futures = [
                ex.submit(_build_one, template, chosen, vectors[a:b], a, path)
                for a, b, path in jobs
            ]
            counts = [f.result() for f in futures]
    if counts != [b - a for a, b in bounds]:
        raise RuntimeError(f"shards hold {counts} rows, expected {[b - a for a, b in bounds]}")
    manifest = {"kind": chosen.name, "dim": dim, "rows": n, "params": p, "bounds": bounds}
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def _build_with_ray(
    vectors: np.ndarray,
    template: bytes,
    kind: IndexKind,
    jobs: list[tuple[int, int, str]],
    address: str | None,
) -> list[int]:
    import ray

    from xmodal.distributed.ray_encoding import _connect

    _connect(address, None)
    task = ray.remote(num_cpus=1)(_build_one)
    shared = ray.put(template)
    refs = [
        task.remote(shared, kind, ray.put(np.ascontiguousarray(vectors[a:b])), a, path)
        for a, b, path in jobs
    ]
    return [int(c) for c in ray.get(refs)]


def merge_ivf(folder: str | Path) -> Path:
    """Merge the IVF shards of ``folder`` into one IVF index (``merged.faiss``).

    The inverted lists are appended shard after shard, so the merged index equals one built
    by adding all rows in order to the same trained quantizer.

    Raises:
        ValueError: the shards are not IVF.
    """
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    kind = get_kind("float", manifest["kind"])
    if not kind.merges:
        raise ValueError(
            f"{folder}: only shards of a kind that merges (ivf) merge into one index, "
            f"not {manifest['kind']!r}"
        )
    merged = kind.read(_shard_file(folder, 0), mmap=False)
    for s in range(1, len(manifest["bounds"])):
        other = kind.read(_shard_file(folder, s), mmap=False)
        merged.merge_from(other, 0)  # labels already global positions
    out = folder / MERGED
    kind.write(merged, out)
    return out


@dataclass
class ShardedIndex:
    """The shards of one collection, opened read-only; searched with a top-k merge.

    Attributes:
        folder: The folder :func:`build_sharded` wrote.
        kind: Name of the FAISS kind of every shard.
        dim: Embedding size.
        bounds: ``(start, stop)`` global rows of each shard.
        indexes: The FAISS shard indexes (or the single merged IVF index).
    """

    folder: Path
    kind: str
    dim: int
    bounds: list[tuple[int, int]]
    indexes: list[Any]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def index_kind(self) -> IndexKind:
        """The shards' :class:`~xmodal.index.kinds.IndexKind`."""
        return get_kind("float", self.kind)

    @classmethod
    def open(cls, folder: str | Path, *, merged: bool = False, mmap: bool = True) -> ShardedIndex:
        """Open the shards (``merged``: the one index :func:`merge_ivf` wrote)."""
        folder = Path(folder)
        try:
            m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{folder} holds no sharded index ({MANIFEST} missing)") from e
        kind, params = m["kind"], m["params"]
        bounds = [(int(a), int(b)) for a, b in m["bounds"]]
        if merged:
            files = [folder / MERGED]
        else:
            files = [_shard_file(folder, s) for s in range(len(bounds))]
        index_kind = get_kind("float", kind)
        indexes = []
        for f in files:
            index = index_kind.read(f, mmap)
            wrapped = isinstance(index, faiss.IndexIDMap2)
            inner = faiss.downcast_index(index.index) if wrapped else index
            index_kind.set_search_params(inner, params)
            indexes.append(index)
        return cls(folder, kind, int(m["dim"]), bounds, indexes, dict(params))

    @property
    def rows(self) -> int:
        """Rows of the whole collection."""
        return self.bounds[-1][1] if self.bounds else 0

    def search(
        self, queries: np.ndarray, k: int, workers: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [q, k'], global positions [q, k'])`` best first, ``k' = min(k, rows)``."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries must be [n, {self.dim}], got {q.shape}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")

        def one(index: Any) -> tuple[np.ndarray, np.ndarray]:
            return index.search(q, min(k, max(1, index.ntotal)))

        with ThreadPoolExecutor(max_workers=workers or len(self.indexes)) as ex:
            parts = list(ex.map(one, self.indexes))
        return merge_topk([s for s, _ in parts], [p for _, p in parts], min(k, self.rows))

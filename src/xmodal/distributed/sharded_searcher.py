"""A :class:`~xmodal.search.Searcher` whose float searches go to the sharded indexes.

``build_index_ray(..., shards=N)`` (``xmodal index build --ray --shards N``) writes float shards
of each collection under ``<index>/shards/<collection>``. :class:`ShardedSearcher` answers
``float`` searches without label filters from them (top-k merged across shards, ties by row
position, exactly as the single index ranks; shards of a kind with a re-rank factor (IVF-PQ)
re-rank their candidates exactly, as the single index does, and so do cross-modal searches of an
index with a query bank, by the normalised score); everything else (Hamming, two-stage, label
filters) and indexes whose shards are missing or older than the current version use the single
index.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.distributed.sharded import MANIFEST, ShardedIndex
from xmodal.search import Searcher
from xmodal.search.engine import BIAS_CANDIDATES_PER_ROW, Mode, rerank_exact
from xmodal.search.results import Hits
from xmodal.search.searcher import Target, check_query_modality

__all__ = ["ShardedSearcher"]

_log = logging.getLogger(__name__)


class ShardedSearcher(Searcher):
    """Search an index folder, using its float shards (``<index>/shards/``) where they apply.

    Args:
        index_dir: The index folder.
        **kwargs: As for :class:`~xmodal.search.Searcher`.
    """

    def __init__(self, index_dir: str | Path, **kwargs: Any) -> None:
        super().__init__(index_dir, **kwargs)
        self._shards: dict[str, ShardedIndex] = {}
        for name in ("image", "text"):
            folder = self.index_dir / "shards" / name
            if not (folder / MANIFEST).is_file():
                continue
            version = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("version")
            if version != self.snapshot.version:
                _log.warning("ignoring %s: built for version %s, not %s", folder, version,
                             self.snapshot.version)  # fmt: skip
                continue
            self._shards[name] = ShardedIndex.open(folder)

    @property
    def sharded(self) -> list[str]:
        """Collections searched through shards."""
        return sorted(self._shards)

    def search(
        self,
        target: Target,
        *,
        vectors: np.ndarray | None = None,
        codes: np.ndarray | None = None,
        k: int = 10,
        mode: Mode = "float",
        labels: str | Sequence[str] | None = None,
        candidates: int = 1000,
        query_modality: Target | None = None,
    ) -> Hits:
        shard = self._shards.get(target)
        if shard is None or mode != "float" or labels is not None or vectors is None:
            return super().search(
                target, vectors=vectors, codes=codes, k=k, mode=mode, labels=labels,
                candidates=candidates, query_modality=query_modality,
            )  # fmt: skip
        if not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        snap = self.snapshot
        q = self._check_vectors(vectors, snap)
        col = snap.collections[target]
        check_query_modality(query_modality)
        bias = self._bias(query_modality, target)
        factor = shard.index_kind.rerank_factor(shard.params)
        if bias is not None:
            factor = max(factor, BIAS_CANDIDATES_PER_ROW)
        if factor > 1:  # as the single index (IVF-PQ, a bias): exact re-rank of factor x k
            _, cand = shard.search(q, int(k) * factor)
            pos, scores, _ = rerank_exact(col, q, cand, int(k), bias=bias)
        else:
            scores, pos = shard.search(q, int(k))
        ids = np.where(pos >= 0, col.ids[np.maximum(pos, 0)], -1)
        return Hits(target, mode, ids, scores, None, snap)

"""Scale-out of encoding and indexing on Ray (training scale-out: :mod:`xmodal.distributed`).

* :func:`ray_encode` — a Ray Data actor pool encodes the collection in shards into the ordinary
  feature cache; restarts skip finished shards.
* :func:`build_sharded` / :class:`ShardedIndex` — per-shard FAISS indexes built in parallel
  (Ray tasks, or threads without Ray), searched as shards with a top-k merge that ranks exactly
  like one index; IVF shards share one trained quantizer and merge into one IVF index.
  :class:`ShardedSearcher` is a :class:`~xmodal.search.Searcher` that uses them.
* :func:`encode_collection`, :func:`build_index_ray`, :func:`train_ddp` — the CLI's jobs.

Importing this package does not import Ray.
"""

from __future__ import annotations

from xmodal.scale.jobs import SHARDS_DIR, build_index_ray, encode_collection, train_ddp
from xmodal.scale.ray_encode import EncodeStats, ShardEncoder, ray_encode, shard_path, shards_folder
from xmodal.scale.sharded import ShardedIndex, build_sharded, merge_ivf, merge_topk, shard_bounds
from xmodal.scale.sharded_searcher import ShardedSearcher

__all__ = [
    "SHARDS_DIR",
    "EncodeStats",
    "ShardEncoder",
    "ShardedIndex",
    "ShardedSearcher",
    "build_index_ray",
    "build_sharded",
    "encode_collection",
    "merge_ivf",
    "merge_topk",
    "ray_encode",
    "shard_bounds",
    "shard_path",
    "shards_folder",
    "train_ddp",
]

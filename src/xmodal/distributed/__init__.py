"""Scale-out on existing engines: Ray for encoding and indexing, torchrun DDP for training.

Training (``torchrun`` + DistributedDataParallel)::

    from xmodal.distributed import gather_with_grad, is_distributed, world

    img = gather_with_grad(local_img)   # [world * B, d]; the identity in a single process

The contrastive losses call :func:`gather_with_grad` on their embeddings and :func:`gather` on
row indices and teacher features, so under ``torchrun`` every process scores its rows against the
*global* batch. The trainer wraps the method in DDP (:func:`xmodal.distributed.ddp.wrap_loss`)
and shards each global batch by rank.

Encoding and indexing (Ray):

* :func:`ray_encode` — a Ray Data actor pool encodes the collection in shards into the ordinary
  feature cache; restarts skip finished shards.
* :func:`build_sharded` / :class:`ShardedIndex` — per-shard FAISS indexes built in parallel
  (Ray tasks, or threads without Ray), searched as shards with a top-k merge that ranks exactly
  like one index; IVF shards share one trained quantizer and merge into one IVF index.
  :class:`ShardedSearcher` is a :class:`~xmodal.search.Searcher` that uses them.
* :func:`encode_collection`, :func:`build_index_ray` — the CLI's jobs
  (:func:`xmodal.pipeline.train_ddp` is the training one).

Importing this package neither imports Ray nor starts or joins a process group; the Ray and
sharded-index names load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from xmodal.distributed.gather import World, gather, gather_with_grad, is_distributed, world

_LAZY = {
    "SHARDS_DIR": "jobs",
    "build_index_ray": "jobs",
    "encode_collection": "jobs",
    "EncodeStats": "ray_encoding",
    "ShardEncoder": "ray_encoding",
    "ray_encode": "ray_encoding",
    "shard_path": "ray_encoding",
    "shards_folder": "ray_encoding",
    "ShardedIndex": "sharded",
    "build_sharded": "sharded",
    "merge_ivf": "sharded",
    "merge_topk": "sharded",
    "shard_bounds": "sharded",
    "ShardedSearcher": "sharded_searcher",
}

__all__ = ["World", "gather", "gather_with_grad", "is_distributed", "world", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    """Load the Ray / sharded-index names on first use (they pull in FAISS and the search
    stage, which the training side must not import)."""
    if name in _LAZY:
        return getattr(import_module(f"xmodal.distributed.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'xmodal.distributed' has no attribute {name!r}")

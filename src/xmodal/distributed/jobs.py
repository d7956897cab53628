"""The scale-out jobs behind the CLI: Ray encoding of a dataset, Ray index builds, DDP training.

::

    encode_collection("data/openmoji", ray="local")                 # xmodal encode --ray
    build_index_ray("runs/emoji", "data/openmoji", "indexes/emoji", shards=4, ray="auto")
    train_ddp("data/openmoji", "runs/emoji-ddp", "infonce")          # under torchrun
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.datasets import Dataset, OnBad, load_dataset
from xmodal.distributed.ray_encoding import ray_encode
from xmodal.distributed.sharded import build_sharded

__all__ = [
    "SHARDS_DIR",
    "build_index_ray",
    "encode_collection",
]

SHARDS_DIR = "shards"
_log = logging.getLogger(__name__)


def encode_collection(
    data: str | Path | Dataset,
    *,
    image_encoder: str | None = "efficientnet-lite0",
    text_encoder: str | None = "minilm",
    cache_dir: str | Path | None = None,
    ray: str | None = None,
    shard_size: int = 1024,
    actors: int = 2,
    batch_size: int = 64,
    device: str | None = None,
    on_bad: OnBad = "error",
    progress: bool = True,
) -> dict[str, Any]:
    """Fill the feature cache with a dataset's image and text features.

    With ``ray`` (a cluster address, or ``"local"``) each modality goes through
    :func:`~xmodal.distributed.ray_encoding`; without it through :class:`~xmodal.features.FeatureCache`
    in this process. Returns ``{modality: EncodeStats or the array's shape}``.
    """
    from xmodal.features import FeatureCache, default_cache_dir

    ds = data if isinstance(data, Dataset) else load_dataset(data, on_bad=on_bad)
    cache = FeatureCache(cache_dir or default_cache_dir())
    out: dict[str, Any] = {}
    for modality, name in (("image", image_encoder), ("text", text_encoder)):
        if name is None:
            continue
        kw: dict[str, Any] = {f"{modality}_encoder": name}
        if ray is not None:
            out[modality] = ray_encode(
                ds, cache, address=ray, shard_size=shard_size, actors=actors,
                batch_size=batch_size, **kw,
            )  # fmt: skip
        else:
            arr = cache.get_or_encode(
                ds, batch_size=batch_size, progress=progress, device=device, **kw
            )
            out[modality] = arr.shape
    return out


def _run_encoders(run: str | Path) -> tuple[str, str | None]:
    from xmodal.encoders import get_text_encoder
    from xmodal.training.run import read_run_config

    config = read_run_config(run)
    text: str | None = config.text_encoder
    if get_text_encoder(config.text_encoder, device="cpu").needs_fit:
        text = None  # fitted on the run's training texts: encoded by the driver
    return config.image_encoder, text


def build_index_ray(
    run: str | Path | None,
    data: str | Path,
    out: str | Path,
    *,
    ray: str = "local",
    shards: int = 0,
    actors: int = 2,
    shard_size: int = 1024,
    cache_dir: str | Path | None = None,
    on_bad: OnBad = "error",
    **build_options: Any,
) -> Any:
    """``build_index`` with the encoding (and, with ``shards``, the float indexes) on Ray.

    1. A trained run's encoders fill the feature cache with :func:`ray_encode` (zero-shot dual
       encoders encode in this process).
    2. :func:`xmodal.index.build_index` writes the index as usual (the features come from the
       cache).
    3. With ``shards > 1``, the image and text embeddings of the committed version are indexed
       again as ``shards`` float shards, built by Ray tasks into ``out/shards/<collection>``;
       :class:`ShardedSearcher` searches them.

    Returns the committed index manifest.
    """
    from xmodal.features import FeatureCache, default_cache_dir
    from xmodal.index import Snapshot, build_index

    cache_dir = cache_dir or default_cache_dir()
    ds = load_dataset(data, on_bad=on_bad)
    if run is not None:
        image_name, text_name = _run_encoders(run)
        cache = FeatureCache(cache_dir)
        ray_encode(ds, cache, image_encoder=image_name, address=ray, actors=actors,
                   shard_size=shard_size)  # fmt: skip
        if text_name is not None and ds.captions()[0]:
            ray_encode(ds, cache, text_encoder=text_name, address=ray, actors=actors,
                       shard_size=shard_size)  # fmt: skip
    manifest = build_index(run, ds, out, cache_dir=cache_dir, on_bad=on_bad, **build_options)
    if shards > 1:
        from xmodal.io import write_json_atomic

        with Snapshot.open(out) as snap:
            for name, col in snap.collections.items():
                if len(col) == 0:
                    continue
                info = build_sharded(
                    np.asarray(col.vectors), Path(out) / SHARDS_DIR / name, shards=shards,
                    kind=col.info.float_kind, params=col.params("float"), ray=True, address=ray,
                )  # fmt: skip
                info["version"] = snap.version
                write_json_atomic(Path(out) / SHARDS_DIR / name / "sharded.json", info)
    return manifest

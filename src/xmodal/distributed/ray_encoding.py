"""Encode a collection on a Ray cluster into the single-machine feature cache.

::

    from xmodal.distributed import ray_encode

    ray_encode(dataset, ".xmodal-cache", image_encoder="efficientnet-lite0")          # local Ray
    ray_encode(dataset, "/shared/cache", text_encoder="minilm", address="ray://head:10001")

Ray Data turns the collection into shards of ``shard_size`` rows (image paths or captions) and
maps them through a pool of encoder actors (one GPU each where the cluster has GPUs, else CPU).
Each actor writes its shard as ``shard-<i>.npy`` (write to a temporary name, then rename), so a
shard file is either complete or absent. The driver then concatenates the shards, in order, into
the same memory-mapped ``.npy`` + manifest :class:`~xmodal.features.FeatureCache` writes; after
that ``FeatureCache.get_or_encode`` finds the features without encoding. A restarted run skips
the shards already on disk. On a cluster the cache folder must be shared storage (NFS, a mounted
bucket) that every worker can write.

Layout while encoding (beside the cache entry)::

    <modality>-<encoder>-<hash>.shards/
        identity.json        # encoder key, dataset fingerprint, rows, shard size
        shard-00000.npy      # rows [0, shard_size)
        ...
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.datasets.record import Dataset
from xmodal.features.cache import FeatureCache, Modality
from xmodal.features.manifest import FORMAT, write_manifest
from xmodal.features.rows import image_paths, text_rows
from xmodal.io import exclusive_lock, fsync_dir, replace_file, write_json_atomic

__all__ = ["EncodeStats", "ShardEncoder", "ray_encode", "shard_path", "shards_folder"]


@dataclass(frozen=True)
class EncodeStats:
    """What :func:`ray_encode` did.

    Attributes:
        path: The cache entry's ``.npy`` (``None`` when stopped early by ``max_shards``).
        rows: Rows of the collection.
        shards: Shards of the collection.
        encoded: Shards encoded by this call.
        skipped: Shards found on disk from an earlier (interrupted) call.
        cached: Whether the whole entry was already in the cache (nothing done).
        seconds: Wall time of this call.
        actors: Size of the actor pool.
    """

    path: Path | None
    rows: int
    shards: int
    encoded: int
    skipped: int
    cached: bool
    seconds: float
    actors: int

    @property
    def complete(self) -> bool:
        """Whether the cache entry is written."""
        return self.path is not None


def shards_folder(npy: Path) -> Path:
    """The folder holding the shards of the cache entry ``npy``."""
    return npy.with_name(npy.name.removesuffix(".npy") + ".shards")


def shard_path(folder: Path, shard: int) -> Path:
    """File of shard number ``shard``."""
    return folder / f"shard-{shard:05d}.npy"


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array, dtype=np.float32))
        f.flush()
        os.fsync(f.fileno())
    replace_file(tmp, path)


def _shard_done(path: Path, rows: int) -> bool:
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return arr.ndim == 2 and arr.shape[0] == rows and arr.dtype == np.float32


class ShardEncoder:
    """Ray Data actor: builds the encoder once, then encodes and writes one shard per row.

    Args:
        modality: ``"image"`` or ``"text"``.
        encoder: Registered encoder name.
        folder: Shard folder (shared storage on a cluster).
        batch_size: Inputs per forward pass.
        threads: torch CPU threads of this actor (``None``: leave torch's default).
    """

    def __init__(
        self,
        modality: str,
        encoder: str,
        folder: str,
        batch_size: int = 64,
        threads: int | None = None,
    ) -> None:
        import torch

        from xmodal.encoders import get_image_encoder, get_text_encoder

        if threads:
            torch.set_num_threads(threads)
        build = get_image_encoder if modality == "image" else get_text_encoder
        self.modality, self.folder, self.batch_size = modality, Path(folder), batch_size
        self.encoder = build(encoder, device=None)  # CUDA when the actor was given a GPU

    def encode(self, inputs: list[str]) -> np.ndarray:
        """``[len(inputs), dim]`` features of image paths or texts."""
        from xmodal.encoders import ImageEncoder, encode_images

        if isinstance(self.encoder, ImageEncoder):
            return encode_images(
                self.encoder, inputs, self.batch_size, num_workers=0, progress=False
            )
        return self.encoder.encode(inputs, batch_size=self.batch_size, progress=False)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards, rows, seconds = [], [], []
        for shard, inputs in zip(batch["shard"], batch["inputs"], strict=True):
            start = time.perf_counter()
            feats = self.encode([str(x) for x in inputs])
            _save_atomic(shard_path(self.folder, int(shard)), feats)
            shards.append(int(shard))
            rows.append(len(feats))
            seconds.append(time.perf_counter() - start)
        return {
            "shard": np.asarray(shards, dtype=np.int64),
            "rows": np.asarray(rows, dtype=np.int64),
            "seconds": np.asarray(seconds, dtype=np.float64),
        }


def _connect(address: str | None, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address in (None, "", "local"):
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)


def _gpus_per_actor(use_gpu: bool | None) -> float:
    import ray

    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    return 1.0 if use_gpu else 0.0


def ray_encode(
    dataset: Dataset,
    cache: FeatureCache | str | Path,
    *,
    image_encoder: str | None = None,
    text_encoder: str | None = None,
    address: str | None = None,
    shard_size: int = 1024,
    actors: int = 2,
    batch_size: int = 64,
    use_gpu: bool | None = None,
    num_cpus: int | None = None,
    threads_per_actor: int | None = 1,
    max_shards: int | None = None,
    keep_shards: bool = False,
) -> EncodeStats:
    """Encode one modality of ``dataset`` with a Ray actor pool into ``cache``.

    Rows are those of :meth:`FeatureCache.get_or_encode`: one per record (images) or one per
    caption in ``Dataset.captions()`` order (texts). Give exactly one of ``image_encoder`` /
    ``text_encoder`` (registered names; the actors build their own copy).

    Args:
        dataset: The collection (image paths must be readable from every worker).
        cache: The feature cache (folder) the result goes into.
        image_encoder: Registered image encoder name.
        text_encoder: Registered text encoder name (one that needs no fitting).
        address: Ray cluster address (``auto``, ``ray://host:10001``); ``None`` or ``"local"``
            starts a local Ray on 127.0.0.1 (unless this process is already connected).
        shard_size: Rows per shard (the unit of work, of writing and of resuming).
        actors: Encoder actors in the pool.
        batch_size: Inputs per forward pass inside an actor.
        use_gpu: One GPU per actor; ``None``: when the cluster has GPUs.
        num_cpus: CPUs of a local Ray started here (``None``: all).
        threads_per_actor: torch CPU threads per actor (``None``: torch's default).
        max_shards: Encode at most this many missing shards, then stop without assembling (a
            time-boxed job; the next call resumes). ``None``: all.
        keep_shards: Keep the shard files after assembling the cache entry.

    Raises:
        ValueError: bad arguments, an encoder that needs fitting, or no rows.
        ImportError: Ray is not installed (``pip install 'xmodal[scale]'``).
    """
    start_time = time.perf_counter()
    if (image_encoder is None) == (text_encoder is None):
        raise ValueError("give exactly one of image_encoder= or text_encoder= (a registered name)")
    if shard_size < 1 or actors < 1 or batch_size < 1:
        raise ValueError(
            f"shard_size, actors and batch_size must be >= 1, got {shard_size}, {actors}, "
            f"{batch_size}"
        )
    if max_shards is not None and max_shards < 0:
        raise ValueError(f"max_shards must be >= 0, got {max_shards}")
    try:
        import ray
        import ray.data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("ray_encode needs Ray Data: pip install 'xmodal[scale]'") from e
    from xmodal.encoders import get_image_encoder, get_text_encoder

    cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    modality: Modality = "image" if image_encoder is not None else "text"
    name = image_encoder if modality == "image" else text_encoder
    assert name is not None
    # the key names the cache entry; building the encoder here (on CPU) also checks the name
    encoder = (get_image_encoder if modality == "image" else get_text_encoder)(name, device="cpu")
    if getattr(encoder, "needs_fit", False):
        raise ValueError(
            f"text encoder {name!r} must be fitted on training texts; encode it with "
            "FeatureCache.get_or_encode instead"
        )
    inputs = (
        [str(p) for p in image_paths(dataset)] if modality == "image" else text_rows(dataset)[0]
    )
    if not inputs:
        raise ValueError(f"dataset {dataset.name!r} has no {modality} rows to encode")
    fingerprint = dataset.fingerprint()
    npy = cache.path(dataset, encoder.key, modality, fingerprint)
    n_shards = -(-len(inputs) // shard_size)

    def stats(path: Path | None, encoded: int, skipped: int, cached: bool) -> EncodeStats:
        seconds = time.perf_counter() - start_time
        return EncodeStats(path, len(inputs), n_shards, encoded, skipped, cached, seconds, actors)

    if cache.get(dataset, encoder.key, modality, fingerprint) is not None:
        return stats(npy, 0, 0, True)
    folder = shards_folder(npy)
    identity = {
        "encoder": encoder.key,
        "dataset_fingerprint": fingerprint,
        "modality": modality,
        "rows": len(inputs),
        "shard_size": shard_size,
        "format": FORMAT,
    }
    _prepare_folder(folder, identity)
    bounds = [(i, i * shard_size, min(len(inputs), (i + 1) * shard_size)) for i in range(n_shards)]
    todo = [b for b in bounds if not _shard_done(shard_path(folder, b[0]), b[2] - b[1])]
    skipped = n_shards - len(todo)
    resumed_rows = len(inputs) - sum(b - a for _, a, b in todo)
    if max_shards is not None:
        todo = todo[:max_shards]
    if todo:
        _connect(address, num_cpus)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        items = [{"shard": i, "inputs": inputs[a:b]} for i, a, b in todo]
        pool = min(actors, len(todo))
        result = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ShardEncoder,
            fn_constructor_kwargs={
                "modality": modality,
                "encoder": name,
                "folder": str(folder),
                "batch_size": batch_size,
                "threads": threads_per_actor,
            },
            batch_size=1,
            concurrency=pool,
            num_cpus=1,
            num_gpus=_gpus_per_actor(use_gpu),
        )
        done = result.take_all()
        missing = sorted({i for i, _, _ in todo} - {int(r["shard"]) for r in done})
        if missing:
            raise RuntimeError(f"Ray returned no result for shards {missing} of {folder}")
    if skipped + len(todo) < n_shards:
        return stats(None, len(todo), skipped, False)
    _assemble(
        npy, folder, bounds, encoder, dataset, modality, fingerprint, start_time, resumed_rows
    )
    if not keep_shards:
        shutil.rmtree(folder, ignore_errors=True)
    return stats(npy, len(todo), skipped, False)


def _prepare_folder(folder: Path, identity: dict[str, Any]) -> None:
    """Create the shard folder; wipe it when it belongs to other data or settings."""
    marker = folder / "identity.json"
    if folder.is_dir():
        try:
            same = json.loads(marker.read_text(encoding="utf-8")) == identity
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        write_json_atomic(marker, identity)


def _assemble(
    npy: Path,
    folder: Path,
    bounds: list[tuple[int, int, int]],
    encoder: Any,
    dataset: Dataset,
    modality: str,
    fingerprint: str,
    start_time: float,
    resumed_rows: int,
) -> None:
    """Concatenate the shards into the cache's ``.npy`` and write its manifest (last)."""
    first = np.load(shard_path(folder, 0), mmap_mode="r")
    rows, dim = bounds[-1][2], int(first.shape[1])
    tmp = npy.with_name(npy.name.removesuffix(".npy") + ".assembling.npy")
    with exclusive_lock(npy.with_suffix(".lock")):
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, dim))
        for i, a, b in bounds:
            block = np.load(shard_path(folder, i), mmap_mode="r")
            if block.shape != (b - a, dim):
                raise ValueError(
                    f"{shard_path(folder, i)} holds {block.shape}, expected {(b - a, dim)}"
                )
            out[a:b] = block
        out.flush()
        del out
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        replace_file(tmp, npy)
        write_manifest(
            npy, encoder, modality, dataset, fingerprint, rows, dim,
            time.perf_counter() - start_time, resumed_rows,
        )  # fmt: skip
        fsync_dir(npy.parent)

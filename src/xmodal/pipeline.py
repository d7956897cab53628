"""The whole pipeline as plain functions: data -> features -> trained run -> metrics -> search.

The CLI, the demo and the benchmarks call these; so can users::

    from xmodal.pipeline import train, evaluate, search_text
    train("data/openmoji", "runs/emoji", method="infonce")
    evaluate("runs/emoji", split="test")
    search_text("runs/emoji", "a smiling cat", k=5)
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmodal.datasets import Dataset, OnBad, load_dataset, summarize_skipped
from xmodal.datasets.split_rules import DEFAULT_SPLIT, parse_split
from xmodal.distributed.gather import world
from xmodal.encoders import get_text_encoder
from xmodal.encoders.base import resolve_device
from xmodal.features import default_cache_dir
from xmodal.methods import build_method
from xmodal.methods.registry import config_to_dict, method_config, requires_target
from xmodal.options import build_config
from xmodal.training import TrainConfig, Trainer, seed_everything
from xmodal.training.data import UnpairedFeatures
from xmodal.training.encoded import TEXT_ENCODER_STATE, EncodedDataset, encode_dataset
from xmodal.training.loaded import LoadedRun
from xmodal.training.presets import resolve_preset
from xmodal.training.run import RunConfig, RunWriter, read_run_config, write_metrics

if TYPE_CHECKING:
    from xmodal.search import Result, Searcher

__all__ = [
    "TEXT_ENCODER_STATE",
    "EncodedDataset",
    "LoadedRun",
    "default_cache_dir",
    "encode_dataset",
    "encoder_for_tower",
    "evaluate",
    "run_searcher",
    "search_text",
    "train",
    "train_ddp",
]

#: Encoders of a run when neither the caller nor a fine-tuned tower names one.
DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
DEFAULT_TEXT_ENCODER = "minilm"


def encoder_for_tower(explicit: str | None, tower: str, default: str, modality: str) -> str:
    """The encoder whose features a ``tower`` reads: ``explicit`` when given (checked against
    the tower), else the tower's intermediate-layer encoder, else ``default`` (``mlp`` towers).
    """
    from xmodal.models.backbone_heads import tower_encoder

    needed = tower_encoder(tower)
    if explicit is None:
        return needed or default
    if needed is not None and explicit != needed:
        raise ValueError(
            f"{modality}_tower={tower!r} reads {needed!r} features, but "
            f"{modality}_encoder={explicit!r} was given: leave the encoder unset or pass {needed!r}"
        )
    return explicit


def train(
    data: str | Path,
    out: str | Path,
    method: str | None = None,
    *,
    preset: str | Path | None = None,
    target: str | Path | Dataset | None = None,
    image_encoder: str | None = None,
    text_encoder: str | None = None,
    split: str = DEFAULT_SPLIT,
    method_options: dict[str, Any] | None = None,
    train_options: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    on_bad: OnBad = "error",
    dataset: Dataset | None = None,
) -> dict[str, Any]:
    """Train ``method`` on ``data`` and write the run directory ``out``.

    ``method`` defaults to ``infonce``, or to the method of ``preset`` (a name from
    :func:`xmodal.training.presets.list_presets` or a preset JSON file), whose method and trainer
    options ``method_options`` and ``train_options`` override key by key. Option values may be
    strings (as the CLI passes them): they are coerced to the config fields' types.

    ``target`` is a dataset (folder, file or :class:`~xmodal.datasets.Dataset`) of the domain a
    transfer method (``aeir``) adapts to: its pairing is ignored, its images and captions are
    two unpaired pools, encoded with the run's encoders. Only methods that train on a target take
    one, and they need it.

    The split is drawn by ``split`` (see :mod:`xmodal.datasets.split_rules`) with the trainer's seed and
    stored in ``out/split.json``; the checkpoint is selected on the validation split. Returns the
    run's ``metrics.json`` content (validation metrics of the selected checkpoint).

    Encoders left at ``None`` are the preset's, else the defaults (``efficientnet-lite0``,
    ``minilm``), or the intermediate-layer features a fine-tuned tower reads
    (``image_tower="efficientnet-top2"`` needs ``efficientnet-lite0.blocks-14``; see
    :func:`xmodal.models.tower_encoder`).

    Inside a ``torch.distributed`` process group (``torchrun``, :func:`xmodal.distributed.train_ddp`)
    every process trains, but only rank 0 writes ``out`` (config, split, fitted text encoder,
    history, checkpoints, metrics); the other ranks return the same metrics and write no files
    (the shared feature cache aside).
    """
    chosen = resolve_preset(preset, method, method_options, train_options)
    method, options, train_values = chosen.method, dict(chosen.method_options), chosen.train_options
    image_encoder = image_encoder or chosen.image_encoder
    text_encoder = text_encoder or chosen.text_encoder
    needs_target = requires_target(method)
    if needs_target and target is None:
        raise ValueError(
            f"method {method!r} adapts to an unpaired target domain: give its images and texts "
            "as a dataset (xmodal train --target DIR, pipeline.train(..., target=DIR))"
        )
    if target is not None and not needs_target:
        raise ValueError(
            f"method {method!r} does not use unpaired target data; --target/target= is only for "
            "transfer methods such as aeir"
        )
    image_encoder = encoder_for_tower(
        image_encoder, options.get("image_tower", "mlp"), DEFAULT_IMAGE_ENCODER, "image"
    )
    text_encoder = encoder_for_tower(
        text_encoder, options.get("text_tower", "mlp"), DEFAULT_TEXT_ENCODER, "text"
    )
    method_config(method, options)  # a bad option is an error before any encoding
    train_cfg = build_config(TrainConfig, train_values, "trainer option")
    out = Path(out)
    ds = dataset if dataset is not None else load_dataset(data, on_bad=on_bad)
    the_split = parse_split(split, ds, seed=train_cfg.seed)
    if not the_split.train:
        raise ValueError(f"split {split!r} leaves no training records")
    device = resolve_device(train_cfg.device)
    text_enc = get_text_encoder(text_encoder, device=device)
    if text_enc.needs_fit:
        train_ds = the_split.apply(ds)[0]
        text_enc.fit(train_ds.captions()[0])
    encoded = encode_dataset(
        ds, image_encoder, text_enc, cache_dir, str(device), train_cfg.progress
    )
    parts = {name: encoded.paired(ids) for name, ids in asdict(the_split).items() if ids}
    unpaired = None
    if target is not None:
        target_ds = target if isinstance(target, Dataset) else load_dataset(target, on_bad=on_bad)
        pools = encode_dataset(
            target_ds, image_encoder, text_enc, cache_dir, str(device), train_cfg.progress
        )
        unpaired = UnpairedFeatures(image=pools.image, text=pools.text)
    seed_everything(train_cfg.seed)  # the heads' initialisation follows the run's seed
    model = build_method(method, encoded.image.shape[1], encoded.text.shape[1], **options)
    run = RunConfig(
        method=method,
        method_options={k: v for k, v in config_to_dict(model.config).items() if k != "base"},
        train=asdict(train_cfg),
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        data=str(data),
        image_dim=int(encoded.image.shape[1]),
        text_dim=int(encoded.text.shape[1]),
        split={
            "rule": split,
            "sizes": [len(the_split.train), len(the_split.val), len(the_split.test)],
        },
        skipped=summarize_skipped(ds.skipped),
        preset=None if preset is None else str(preset),
        target=None
        if target is None
        else str(target.root if isinstance(target, Dataset) else target),
    )
    writer = RunWriter(out, run) if world().is_main else None  # rank 0 writes the run
    if writer is not None:
        writer.write_split(asdict(the_split))
        if text_enc.needs_fit:
            text_enc.save(out / TEXT_ENCODER_STATE)  # type: ignore[attr-defined]
    on_epoch = writer.on_epoch if writer is not None else None
    result = Trainer(model, train_cfg, on_epoch=on_epoch).fit(
        parts["train"], parts.get("val"), unpaired=unpaired
    )
    metrics: dict[str, Any] = {
        "val": result.best,
        "best_epoch": result.best_epoch,
        "seconds_per_epoch": result.seconds_per_epoch,
        **model.extra_state_for_run(),
    }
    if writer is not None:
        if result.query_bank is not None:
            writer.save_query_bank(result.query_bank)
        writer.finish(model, metrics)
    return metrics


def _dataset_of(run: LoadedRun, data: str | Path | None, on_bad: OnBad) -> Dataset:
    return load_dataset(data if data is not None else run.config.data, on_bad=on_bad)


def evaluate(
    run_dir: str | Path,
    data: str | Path | None = None,
    split: str = "test",
    cache_dir: str | Path | None = None,
    on_bad: OnBad = "error",
    progress: bool = True,
) -> dict[str, float]:
    """Recall@K, rsum (and mAP in four directions when labels exist) of a run on one split.

    ``split`` is ``test``, ``val``, ``train`` or ``all``; the metrics are also merged into the
    run's ``metrics.json`` under that name.
    """
    if split not in ("test", "val", "train", "all"):
        raise ValueError(f"split must be test, val, train or all; got {split!r}")
    run = LoadedRun.open(run_dir)
    ds = _dataset_of(run, data, on_bad)
    encoded = run.encode(ds, cache_dir, progress)
    ids = ds.ids if split == "all" else getattr(run.split, split)
    if not ids:
        raise ValueError(f"the run's {split} split is empty")
    metrics = run.score(encoded.paired(ids))
    write_metrics(run_dir, {split: metrics})
    return metrics


@contextlib.contextmanager
def run_searcher(
    run_dir: str | Path,
    data: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> Iterator[Searcher]:
    """A :class:`~xmodal.search.Searcher` over a temporary exact index of ``data`` (default:
    the run's data) built with the run's model; the index is deleted when the block ends::

        with run_searcher("runs/emoji") as searcher:
            searcher.text_to_image("a smiling cat", k=5)
    """
    from xmodal.index import build_index
    from xmodal.search import Searcher

    source = data if data is not None else read_run_config(run_dir).data
    ds = load_dataset(source, on_bad="error")
    with tempfile.TemporaryDirectory(prefix="xmodal-search-") as tmp:
        index_dir = Path(tmp) / "index"
        build_index(run_dir, ds, index_dir, kind="flat", cache_dir=cache_dir, progress=progress)
        with Searcher(index_dir) as searcher:
            yield searcher


def search_text(
    run_dir: str | Path,
    query: str,
    data: str | Path | None = None,
    k: int = 5,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> list[Result]:
    """The ``k`` images of ``data`` (default: the run's data) closest to a text ``query``,
    ranked by :class:`~xmodal.search.Searcher` over an exact index (:func:`run_searcher`)."""
    if not query.strip():
        raise ValueError("the query is empty")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    with run_searcher(run_dir, data, cache_dir, progress) as searcher:
        return searcher.text_to_image(query, k)


def run_config(run_dir: str | Path) -> RunConfig:
    """The configuration a run was trained with."""
    return read_run_config(run_dir)


def train_ddp(data: str | Path, out: str | Path, method: str | None = None, **options: Any) -> Any:
    """:func:`train` in every process of a ``torchrun`` job.

    Joins the process group (``nccl`` on GPUs, ``gloo`` on CPUs); every rank trains on its slice
    of each global batch and returns the run's metrics, and only rank 0 writes the run directory
    ``out`` (``pipeline.train`` is rank-aware). ``batch_size`` in ``train_options`` is per
    process: the global batch is ``world · batch_size``. Progress bars show on rank 0 only.
    """
    from xmodal.distributed.ddp import process_group

    train_options = dict(options.pop("train_options", None) or {})
    with process_group(train_options.get("device", "auto")) as (place, device):
        train_options["device"] = str(device)
        if not place.is_main:
            train_options["progress"] = False
        return train(data, out, method, train_options=train_options, **options)

"""The one trainer: every method, every stage, checkpoints chosen on validation."""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from xmodal.distributed.ddp import wrap_loss
from xmodal.distributed.gather import world
from xmodal.embedding import embed_features, embed_pairs, score_embeddings
from xmodal.encoders.base import resolve_device
from xmodal.methods.base import Method, Stage
from xmodal.models.param_groups import param_groups
from xmodal.querybank import QueryBank
from xmodal.training.config import TrainConfig
from xmodal.training.data import PairedFeatures, UnpairedFeatures, iterate_batches

__all__ = ["TrainResult", "Trainer", "seed_everything"]

EpochCallback = Callable[[dict[str, Any], Method], None]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for batch order."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        history: One dict per epoch: stage, epoch, mean loss terms, validation metrics, seconds.
        best: Validation metrics of the selected checkpoint.
        best_epoch: Global epoch (1-based) of the selected checkpoint; 0 for closed-form methods.
        seconds_per_epoch: Mean wall time of a training epoch (without validation).
        query_bank: The selected checkpoint's query bank (training-split embeddings) when
            ``query_bank_beta`` is set, else ``None``.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    seconds_per_epoch: float = 0.0
    query_bank: QueryBank | None = None


def _schedule(
    optimizer: torch.optim.Optimizer, total: int, warmup: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _selection_value(metrics: dict[str, float], select_metric: str) -> float:
    if select_metric == "map":
        if "map_i2t" not in metrics:
            raise ValueError("select_metric='map' needs labels on the validation split")
        return (metrics["map_i2t"] + metrics["map_t2i"]) / 2
    return metrics["rsum"]


class Trainer:
    """Trains any registered method on frozen features.

    For each of the method's stages: AdamW over that stage's parameters (a parameter marked with
    :func:`xmodal.models.set_lr_scale` learns at ``lr * scale``), linear warm-up and cosine
    decay, gradient clipping; after each epoch of a selecting stage, the validation split is scored
    and the best state (by ``select_metric``) is kept; patience stops a stage early. The test split
    is never seen here.

    Inside an initialised ``torch.distributed`` process group (``torchrun``, see
    :mod:`xmodal.distributed`) the loss runs under DDP, each process takes its slice of every
    global batch of ``world · batch_size`` pairs, :meth:`Method.loss` gathers the step's outputs
    once so the objective sees the global batch (methods that do not declare
    ``global_negatives`` are refused), and every process validates (the parameters are
    identical, so all take the same selection and early-stopping decisions). Each epoch
    record holds the total ``loss`` and every term and diagnostic the objective returned.

    Args:
        method: The method to train (moved to the configured device).
        config: Trainer options.
        on_epoch: Called after every epoch with the epoch record and the method (used to write
            checkpoints and history as training goes, so nothing is lost on a crash).
    """

    def __init__(
        self, method: Method, config: TrainConfig, on_epoch: EpochCallback | None = None
    ) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.method = method.to(self.device)
        self.on_epoch = on_epoch

    def query_bank(self, train: PairedFeatures) -> QueryBank | None:
        """The current model's query bank: embeddings of a seeded sample of at most
        ``query_bank_size`` training images and as many training captions (``None`` when
        ``query_bank_beta`` is 0)."""
        cfg = self.config
        if not cfg.query_bank_beta:
            return None
        rng = np.random.default_rng([cfg.seed, 2])

        def embed_sample(features: np.ndarray, modality: str) -> np.ndarray:
            keep = np.sort(rng.permutation(len(features))[: cfg.query_bank_size])
            return embed_features(self.method, features[keep], modality, device=self.device)  # type: ignore[arg-type]

        return QueryBank(
            embed_sample(train.image, "image"),
            embed_sample(train.text, "text"),
            cfg.query_bank_beta,
        )

    def _validate(self, val: PairedFeatures | None, bank: QueryBank | None) -> dict[str, float]:
        if val is None:
            return {}
        return score_embeddings(embed_pairs(self.method, val, self.device), query_bank=bank)

    def fit(
        self,
        train: PairedFeatures,
        val: PairedFeatures | None = None,
        unpaired: UnpairedFeatures | None = None,
    ) -> TrainResult:
        """Train on ``train``; select on ``val`` (when given, else keep the final state).

        ``unpaired`` target-domain images and texts (for transfer methods) reach the method in
        :class:`~xmodal.methods.base.TrainingData` and, drawn at random each step, in every
        :class:`~xmodal.methods.base.Batch` (``target_image``, ``target_text``). They are drawn
        with their own generator, seeded from ``seed``, so the caption batches are exactly those
        of a run without them; methods that ignore them train exactly as before.
        """
        cfg = self.config
        generator = seed_everything(cfg.seed)
        target_generator = None
        if unpaired is not None:
            target_seed = int(np.random.SeedSequence([cfg.seed, 1]).generate_state(1)[0])
            target_generator = torch.Generator().manual_seed(target_seed)
        data = train.to_training_data(self.device, unpaired)
        self.method.prepare(data)
        result = TrainResult()
        if not self.method.trainable:
            self.method.fit(data)
            result.query_bank = self.query_bank(train)
            result.best = self._validate(val, result.query_bank)
            result.history.append({"stage": "fit", "epoch": 0, **result.best})
            if self.on_epoch:
                self.on_epoch(result.history[-1], self.method)
            return result

        stages = self.method.stages()
        weights = sum(s.epoch_fraction for s in stages)
        best_value, best_state = -math.inf, None
        epoch_times: list[float] = []
        global_epoch = 0
        for stage in stages:
            n_epochs = (
                max(1, round(cfg.epochs * stage.epoch_fraction / weights)) if cfg.epochs else 0
            )
            global_epoch, stage_best = self._run_stage(
                stage,
                n_epochs,
                data,
                train,
                val,
                generator,
                global_epoch,
                result,
                epoch_times,
                target_generator,
            )
            if stage.select and stage_best is not None and stage_best[0] > best_value:
                best_value, best_state, result.best_epoch, result.best = stage_best
        if best_state is not None:
            self.method.load_state_dict(best_state)
        result.query_bank = self.query_bank(train)
        if best_state is None and val is not None:
            result.best = self._validate(val, result.query_bank)
        result.seconds_per_epoch = float(np.mean(epoch_times)) if epoch_times else 0.0
        return result

    def _run_stage(
        self,
        stage: Stage,
        n_epochs: int,
        data: Any,
        train: PairedFeatures,
        val: PairedFeatures | None,
        generator: torch.Generator,
        global_epoch: int,
        result: TrainResult,
        epoch_times: list[float],
        target_generator: torch.Generator | None = None,
    ) -> tuple[int, tuple[float, dict[str, Any], int, dict[str, float]] | None]:
        cfg = self.config
        params = [p for p in stage.parameters if p.requires_grad]
        groups = param_groups(params, cfg.lr)  # per-parameter lr multipliers (``lr_scale``)
        if not groups or n_epochs == 0:
            return global_epoch, None
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        place = world()
        loss_fn = wrap_loss(self.method, self.device)  # DDP in a process group, else the method
        global_batch = cfg.batch_size * place.size
        steps_per_epoch = max(1, math.ceil(data.text_features.shape[0] / global_batch))
        total = steps_per_epoch * n_epochs
        scheduler = _schedule(optimizer, total, max(1, int(cfg.warmup_fraction * total)))
        best: tuple[float, dict[str, Any], int, dict[str, float]] | None = None
        since_best = 0
        bar = tqdm(
            range(n_epochs),
            desc=f"{self.method.name}:{stage.name}",
            disable=not cfg.progress,
            leave=False,
        )
        for _ in bar:
            global_epoch += 1
            start = time.perf_counter()
            self.method.train()
            sums: dict[str, float] = {}
            n_batches = 0
            batches = iterate_batches(
                data,
                cfg.batch_size,
                generator,
                target_generator,
                rank=place.rank,
                world_size=place.size,
            )
            for batch in batches:
                terms = loss_fn(batch, stage=stage.name)
                loss = terms["loss"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"{self.method.name}:{stage.name} loss became {loss.item()} at epoch {global_epoch}"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                n_batches += 1
            epoch_times.append(time.perf_counter() - start)
            record: dict[str, Any] = {"stage": stage.name, "epoch": global_epoch}
            record.update({k: v / max(1, n_batches) for k, v in sums.items()})
            record["seconds"] = epoch_times[-1]
            if stage.select and val is not None:
                metrics = self._validate(val, self.query_bank(train))
                record.update({f"val_{k}": v for k, v in metrics.items()})
                value = _selection_value(metrics, cfg.select_metric)
                if best is None or value > best[0]:
                    best = (value, copy.deepcopy(self.method.state_dict()), global_epoch, metrics)
                    since_best = 0
                    record["selected"] = True
                else:
                    since_best += 1
                bar.set_postfix(loss=f"{record['loss']:.3f}", val=f"{value:.1f}")
            else:
                bar.set_postfix(loss=f"{record['loss']:.3f}")
            result.history.append(record)
            if self.on_epoch:
                self.on_epoch(record, self.method)
            if stage.select and val is not None and cfg.patience and since_best >= cfg.patience:
                break
        if stage.select and val is None:
            best = (0.0, copy.deepcopy(self.method.state_dict()), global_epoch, {})
        return global_epoch, best

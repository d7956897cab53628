"""The trainer's options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Options of the one trainer, shared by every method.

    Attributes:
        epochs: Passes over the training captions (split among a method's stages).
        batch_size: Caption–image pairs per step.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_fraction: Share of each stage's steps spent warming the learning rate up linearly,
            before the cosine decay.
        patience: Stop a stage when the validation metric has not improved for this many epochs
            (``0`` disables early stopping).
        select_metric: Validation metric that picks the checkpoint: ``rsum`` (recall sum), or
            ``map`` (mean of i2t and t2i mAP, needs labels).
        grad_clip: Clip the gradient norm to this value (``None`` for no clipping).
        seed: Seeds parameter initialisation and batch order.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:n]``.
        progress: Show a progress bar.
        query_bank_beta: Inverse temperature of query-bank normalisation
            (:mod:`xmodal.querybank`) applied to validation, evaluation and stored with the run;
            ``0`` scores by the plain cosine.
        query_bank_size: Training items per modality in the query bank (a seeded sample).
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    patience: int = 10
    select_metric: Literal["rsum", "map"] = "rsum"
    grad_clip: float | None = 5.0
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    query_bank_beta: float = 0.0
    query_bank_size: int = 5000

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size must be >= 2 (contrastive losses need negatives), got {self.batch_size}"
            )
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.query_bank_beta < 0:
            raise ValueError(f"query_bank_beta must be >= 0 (0: off), got {self.query_bank_beta}")
        if self.query_bank_size < 1:
            raise ValueError(f"query_bank_size must be >= 1, got {self.query_bank_size}")
        if self.select_metric not in ("rsum", "map"):
            raise ValueError(f"select_metric must be 'rsum' or 'map', got {self.select_metric!r}")

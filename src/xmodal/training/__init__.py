"""The one trainer for every method."""

from xmodal.training.config import TrainConfig
from xmodal.training.data import PairedFeatures, iterate_batches
from xmodal.training.trainer import Trainer, TrainResult, seed_everything

__all__ = [
    "PairedFeatures",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "iterate_batches",
    "seed_everything",
]

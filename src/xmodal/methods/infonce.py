"""Symmetric InfoNCE (CLIP-style) with a learnable temperature and multiple positives."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from xmodal.methods.base import Batch, MethodConfig, Outputs, Terms
from xmodal.methods.dual import DualHeadMethod
from xmodal.methods.registry import register_method

__all__ = ["InfoNCE", "InfoNCEConfig", "multi_positive_infonce"]


@dataclass
class InfoNCEConfig(MethodConfig):
    """Options of :class:`InfoNCE`.

    Attributes:
        temperature: Initial temperature τ (logits are cos / τ).
        learn_temperature: Whether τ is trained (as CLIP does, clamped to ``min_temperature``).
        min_temperature: Lower bound on τ (CLIP's 1/100).
    """

    temperature: float = 0.07
    learn_temperature: bool = True
    min_temperature: float = 0.01


def multi_positive_infonce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-log(sum_pos exp(l) / sum_all exp(l))``.

    Every row needs at least one positive. With exactly one positive per row (the diagonal) this
    is the usual cross-entropy of CLIP.
    """
    log_all = torch.logsumexp(logits, dim=1)
    log_pos = torch.logsumexp(logits.masked_fill(~positives, float("-inf")), dim=1)
    return (log_all - log_pos).mean()


@register_method
class InfoNCE(DualHeadMethod[InfoNCEConfig]):
    """Symmetric contrastive loss over image→text and text→image logits.

    All captions of an image are positives of that image (and of each other's image rows), so a
    batch that draws two captions of one image does not push them apart. The terms are ``i2t``
    and ``t2i`` at weight ½ each. Under DDP the negatives are the global batch.
    """

    name = "infonce"
    Config = InfoNCEConfig
    global_negatives = True

    def __init__(self, config: InfoNCEConfig, image_dim: int, text_dim: int) -> None:
        super().__init__(config, image_dim, text_dim)
        log_scale = torch.tensor(math.log(1.0 / config.temperature))
        self.log_scale = torch.nn.Parameter(log_scale, requires_grad=config.learn_temperature)

    @property
    def temperature(self) -> float:
        """Current τ."""
        return float(1.0 / self.logit_scale().detach())

    def logit_scale(self) -> torch.Tensor:
        """1/τ, clamped so that τ ≥ ``min_temperature``."""
        return self.log_scale.clamp(max=math.log(1.0 / self.config.min_temperature)).exp()

    def cross_logits(self, outputs: Outputs) -> torch.Tensor:
        """The ``[B, B]`` image→text logits of ``outputs`` (``B``: the global batch under DDP)."""
        img, txt = outputs.embeddings()
        return self.logit_scale() * img @ txt.T

    def objective(self, outputs: Outputs, batch: Batch, stage: str = "main") -> Terms:
        logits = self.cross_logits(outputs)
        pos = outputs.positives()
        i2t = multi_positive_infonce(logits, pos)
        t2i = multi_positive_infonce(logits.T, pos.T)
        return Terms().add("i2t", i2t, 0.5).add("t2i", t2i, 0.5)

    def extra_state_for_run(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

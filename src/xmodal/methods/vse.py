"""VSE++: hinge triplet loss on the hardest in-batch negatives (Faghri et al., 2018)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xmodal.methods.base import Batch, MethodConfig, Outputs, Terms
from xmodal.methods.dual import DualHeadMethod
from xmodal.methods.registry import register_method

__all__ = ["VSE", "VSEConfig", "hardest_negative_triplet"]


@dataclass
class VSEConfig(MethodConfig):
    """Options of :class:`VSE`.

    Attributes:
        margin: Hinge margin α.
        max_violation: Hardest negative only (VSE++); ``False`` sums over all negatives (VSE0).
    """

    margin: float = 0.2
    max_violation: bool = True


def hardest_negative_triplet(
    sim: torch.Tensor, positives: torch.Tensor, margin: float, max_violation: bool = True
) -> torch.Tensor:
    """Hinge loss ``[α − s(i,t) + s(i,t')]₊ + [α − s(i,t) + s(i',t)]₊`` over the batch.

    ``sim`` is ``[B, B]`` with the matching pairs on the diagonal; entries where ``positives`` is
    true (another caption of the same image) are never negatives. Returns the mean over rows.
    """
    diag = sim.diagonal()
    cost_t = (margin + sim - diag[:, None]).clamp(min=0).masked_fill(positives, 0)
    cost_i = (margin + sim - diag[None, :]).clamp(min=0).masked_fill(positives, 0)
    if max_violation:
        return cost_t.max(dim=1).values.mean() + cost_i.max(dim=0).values.mean()
    return cost_t.sum(dim=1).mean() + cost_i.sum(dim=0).mean()


@register_method
class VSE(DualHeadMethod[VSEConfig]):
    """Visual-semantic embedding trained with the hardest-negative triplet loss.

    Under ``torch.distributed`` the objective sees the global batch (``global_negatives``), so
    the hardest negatives are drawn from every process's rows.
    """

    name = "vse"
    Config = VSEConfig
    global_negatives = True

    def objective(self, outputs: Outputs, batch: Batch, stage: str = "main") -> Terms:
        img, txt = outputs.embeddings()
        value = hardest_negative_triplet(
            img @ txt.T, outputs.positives(), self.config.margin, self.config.max_violation
        )
        return Terms().add("triplet", value)

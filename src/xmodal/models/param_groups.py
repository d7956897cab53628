"""Per-parameter learning-rate multipliers, and the optimiser groups they make.

A module marks parameters that should learn more slowly (e.g. copies of pretrained backbone
layers) with :func:`set_lr_scale`; the trainer builds its optimiser from :func:`param_groups`,
so methods, stages and the trainer need no other knowledge of them::

    set_lr_scale(head.backbone, 0.1)
    torch.optim.AdamW(param_groups(head.parameters(), lr=1e-3))  # backbone at 1e-4

The multiplier is the attribute ``lr_scale`` of the :class:`torch.nn.Parameter` (default 1).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

__all__ = ["LR_SCALE", "lr_scale", "param_groups", "set_lr_scale"]

#: Name of the parameter attribute holding its learning-rate multiplier.
LR_SCALE = "lr_scale"


def set_lr_scale(module: nn.Module, scale: float) -> nn.Module:
    """Give every parameter of ``module`` the learning-rate multiplier ``scale``; return it."""
    if not scale >= 0:
        raise ValueError(f"lr scale must be >= 0, got {scale}")
    for p in module.parameters():
        setattr(p, LR_SCALE, float(scale))
    return module


def lr_scale(param: nn.Parameter) -> float:
    """The learning-rate multiplier of ``param`` (1 unless :func:`set_lr_scale` set one)."""
    return float(getattr(param, LR_SCALE, 1.0))


def param_groups(params: Iterable[nn.Parameter], lr: float) -> list[dict[str, Any]]:
    """Optimiser parameter groups, one per distinct multiplier, each with ``lr * multiplier``.

    Groups come in order of first appearance; parameters with multiplier 0 are left out (frozen).
    With no multipliers set this is one group holding every parameter at ``lr``.
    """
    groups: dict[float, list[nn.Parameter]] = {}
    for p in params:
        groups.setdefault(lr_scale(p), []).append(p)
    return [
        {"params": ps, "lr": lr * scale, LR_SCALE: scale}
        for scale, ps in groups.items()
        if scale > 0
    ]

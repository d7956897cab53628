"""Projection heads: frozen features -> joint embedding space."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ProjectionHead", "l2_normalize"]


def l2_normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Rows scaled to unit Euclidean norm."""
    return F.normalize(x, dim=-1, eps=eps)


class ProjectionHead(nn.Module):
    """Linear map plus an optional residual MLP branch.

    ``out = W x + MLP(x)`` where the MLP has the given hidden sizes (GELU, dropout, LayerNorm on
    the input). With ``hidden=()`` the head is a plain linear projection. The linear path keeps
    what the frozen encoder already knows; the MLP branch learns the non-linear part.

    Args:
        in_dim: Feature size of the frozen encoder.
        out_dim: Joint embedding size.
        hidden: Hidden sizes of the MLP branch; empty for linear only.
        dropout: Dropout inside the MLP branch (and on the input features).
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden: Sequence[int] = (1024,), dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.input_norm = nn.LayerNorm(in_dim)
        self.input_dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, out_dim)
        layers: list[nn.Module] = []
        prev = in_dim
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.GELU(), nn.Dropout(dropout)]
            prev = h
        self.mlp = nn.Sequential(*layers, nn.Linear(prev, out_dim)) if hidden else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_dropout(self.input_norm(x))
        out = self.linear(x)
        if self.mlp is not None:
            out = out + self.mlp(x)
        return out

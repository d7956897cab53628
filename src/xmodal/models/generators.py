"""Cross-modal feature generators, small discriminators, and gradient reversal.

* :class:`FeatureGenerator` — encoder to a hidden layer, decoder to the other modality's
  feature space (image features → text features or the reverse); trained with an L1 loss and
  then used, frozen, as a teacher that supplies *generated* features.
* :class:`Discriminator` — a small MLP with one logit (e.g. "is this embedding from a text?").
* :func:`grad_reverse` — identity forward, gradient multiplied by ``-scale`` backward (Ganin &
  Lempitsky, 2015): one backward pass trains a discriminator to separate and the network
  before it to confuse, so an adversarial game fits in a single optimiser step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["Discriminator", "FeatureGenerator", "grad_reverse"]


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``x`` unchanged; in the backward pass the gradient is multiplied by ``-scale``."""
    return _GradReverse.apply(x, scale)


class FeatureGenerator(nn.Module):
    """``in_dim`` → hidden (LeakyReLU, dropout) → ``out_dim``: one modality's features to the other's.

    Args:
        in_dim: Source feature size.
        out_dim: Target feature size.
        hidden: Hidden size of the encoder.
        dropout: Dropout on the hidden layer.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout)
        )
        self.decoder = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Generated features of the other modality, ``[n, out_dim]``."""
        return self.decoder(self.encoder(x))


class Discriminator(nn.Module):
    """A small MLP with one output logit.

    Args:
        in_dim: Input size.
        hidden: Hidden sizes (LeakyReLU).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (256,)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_dim
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.LeakyReLU(0.2)]
            prev = h
        self.net = nn.Sequential(*layers, nn.Linear(prev, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, ``[n]``."""
        return self.net(x).squeeze(-1)

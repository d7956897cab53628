"""The binary transform network shared by the hashing methods, and its loss terms.

A :class:`HashHead` maps real-valued features (or joint codes) to ``bits`` relaxed codes in
``(-1, 1)`` through an MLP ending in ``tanh``; at inference :func:`binarize` takes the sign, so
codes are exactly ``{-1, +1}`` (a zero maps to ``+1``). The training terms are pure functions:

* :func:`similarity_matching_loss` — code inner products divided by ``bits`` regress a target
  similarity matrix (usually a cosine matrix, so both sides live in ``[-1, 1]``);
* :func:`cosine_target` — the (optionally centred) cosine matrix such codes regress;
* :func:`quantization_loss` — pulls relaxed codes towards ``±1`` so that the sign loses little.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "HashHead",
    "binarize",
    "cosine_target",
    "quantization_loss",
    "similarity_matching_loss",
]


def binarize(relaxed: torch.Tensor) -> torch.Tensor:
    """``{-1, +1}`` codes: the sign of ``relaxed``, with ``0`` mapped to ``+1``.

    Example:
        >>> binarize(torch.tensor([[0.3, -0.2, 0.0]]))
        tensor([[ 1., -1.,  1.]])
    """
    return torch.where(relaxed >= 0, 1.0, -1.0).to(relaxed.dtype)


def similarity_matching_loss(
    codes_a: torch.Tensor, codes_b: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """``mean((codes_a @ codes_bᵀ / bits − target)²)``.

    Args:
        codes_a: ``[n, bits]`` relaxed codes.
        codes_b: ``[m, bits]`` relaxed codes.
        target: ``[n, m]`` similarities in ``[-1, 1]`` (e.g. cosines of the features the codes
            should preserve).

    Raises:
        ValueError: if the shapes do not fit together.
    """
    if codes_a.ndim != 2 or codes_b.ndim != 2 or codes_a.shape[1] != codes_b.shape[1]:
        raise ValueError(
            f"codes_a {tuple(codes_a.shape)} and codes_b {tuple(codes_b.shape)} must be 2-D "
            "with the same number of bits"
        )
    if target.shape != (codes_a.shape[0], codes_b.shape[0]):
        raise ValueError(
            f"target has shape {tuple(target.shape)}, expected "
            f"{(codes_a.shape[0], codes_b.shape[0])}"
        )
    inner = codes_a @ codes_b.T / codes_a.shape[1]
    return (inner - target).pow(2).mean()


def cosine_target(features: torch.Tensor, center: bool = True) -> torch.Tensor:
    """``[n, n]`` cosine matrix of ``features`` rows, optionally after subtracting their mean.

    Centring removes the direction all rows share: features whose cosines are all high (a common
    offset) would otherwise ask for bits that are the same for every item and carry nothing.
    """
    ref = features - features.mean(0, keepdim=True) if center else features
    unit = F.normalize(ref, dim=-1, eps=1e-8)
    return unit @ unit.T


def quantization_loss(relaxed: torch.Tensor) -> torch.Tensor:
    """``mean((|h| − 1)²)``: zero exactly when every relaxed bit is ``±1``."""
    return (relaxed.abs() - 1).pow(2).mean()


class HashHead(nn.Module):
    """MLP to ``bits`` outputs with ``tanh``: relaxed codes for training, signs for search.

    Args:
        in_dim: Input size (feature or joint-code dimension).
        bits: Code length (> 0).
        hidden: Hidden sizes (``tanh`` activations); empty for one linear layer.
        dropout: Dropout after each hidden layer.

    Example:
        >>> head = HashHead(8, bits=16)
        >>> head.codes(torch.randn(3, 8)).abs().unique().tolist()
        [1.0]
    """

    def __init__(
        self, in_dim: int, bits: int, hidden: Sequence[int] = (), dropout: float = 0.0
    ) -> None:
        super().__init__()
        if bits <= 0:
            raise ValueError(f"bits must be > 0, got {bits}")
        if in_dim <= 0:
            raise ValueError(f"in_dim must be > 0, got {in_dim}")
        self.in_dim, self.bits = in_dim, bits
        layers: list[nn.Module] = []
        prev = in_dim
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.Tanh(), nn.Dropout(dropout)]
            prev = h
        self.net = nn.Sequential(*layers, nn.Linear(prev, bits), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Relaxed codes in ``(-1, 1)``, ``[n, bits]``."""
        return self.net(x)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """``{-1, +1}`` codes, ``[n, bits]`` (the sign of :meth:`forward`)."""
        return binarize(self(x))

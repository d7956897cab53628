"""Gather tensors across the processes of a ``torch.distributed`` group, with gradients.

Why the gradients come out right. Every process gathers the embeddings of all processes and
computes the *same* global loss ``L`` over the global batch. The backward of
:func:`gather_with_grad` sums, over processes, the gradients that arrive for each process's
slice, so process ``r`` gets ``world · ∂L/∂(its rows)``. DDP then averages parameter gradients
over the processes: ``(1/world) Σ_r world · ∂L/∂θ|_r = ∂L/∂θ``, exactly the single-process
gradient of ``L`` on the concatenated batch. Parameters applied after the gather (a temperature)
get the full ``∂L/∂θ`` on every process and their average is again ``∂L/∂θ``.

Outside an initialised process group (or with one process) every function is the identity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["World", "gather", "gather_fields", "gather_with_grad", "is_distributed", "world"]

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in the process group.

    Attributes:
        rank: Global rank (0 when not distributed).
        size: Number of processes (1 when not distributed).
    """

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the process that writes files)."""
        return self.rank == 0


def is_distributed() -> bool:
    """Whether a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> World:
    """Rank and size of the default process group (``World(0, 1)`` when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size())


def _check_same_shape(x: torch.Tensor) -> None:
    shape = torch.tensor(list(x.shape), dtype=torch.long, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(s, shape) for s in shapes):
        found = [tuple(s.tolist()) for s in shapes]
        raise ValueError(f"gather needs equal shapes on every process, got {found}")


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0; backward: all-reduce (sum) the gradient, keep this rank's slice."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_grad(x: torch.Tensor, check_shapes: bool = False) -> torch.Tensor:
    """``[world · n, ...]``: the rows of ``x`` from every process, in rank order, differentiable.

    Gradients flow back to each process's own ``x`` (summed over the processes that used them;
    see the module docstring for why DDP's averaging then yields the single-process gradient).

    Args:
        x: ``[n, ...]`` with the same shape on every process.
        check_shapes: First verify the shapes agree (one extra small collective).

    Raises:
        ValueError: with ``check_shapes``, the processes hold different shapes.
    """
    if not is_distributed():
        return x
    if check_shapes:
        _check_same_shape(x)
    return _GatherWithGrad.apply(x)


def gather(x: torch.Tensor, check_shapes: bool = False) -> torch.Tensor:
    """Like :func:`gather_with_grad` without gradients (indices, labels, teacher features)."""
    if not is_distributed():
        return x
    if check_shapes:
        _check_same_shape(x)
    x = x.detach().contiguous()
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


def _gather_any(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return gather_with_grad(value) if value.requires_grad else gather(value)
    if isinstance(value, dict):
        return {k: _gather_any(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_gather_any(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return gather_fields(value)
    return value


def gather_fields(obj: T) -> T:
    """A copy of the dataclass ``obj`` with every tensor gathered from every process.

    Tensor fields, the tensors in dict and tuple fields and nested dataclasses are gathered
    along dimension 0 in rank order: with gradients (:func:`gather_with_grad`) where the tensor
    requires them, else without (:func:`gather`). Other fields are kept. Outside a process
    group this returns ``obj`` itself. This is how a method's outputs and its batch become the
    global batch, once per step (:meth:`xmodal.methods.base.Method.loss`).
    """
    if not is_distributed():
        return obj
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"gather_fields needs a dataclass instance, got {type(obj).__name__}")
    changes = {f.name: _gather_any(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    return dataclasses.replace(obj, **changes)

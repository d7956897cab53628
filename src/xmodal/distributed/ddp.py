"""DistributedDataParallel around a method's loss, process-group start-up under ``torchrun``.

::

    torchrun --nproc-per-node 4 -m xmodal.cli train --data DIR --out runs/x --ddp

Each process trains on its slice of every global batch (``world · batch_size`` pairs); the
losses gather embeddings across processes (:mod:`xmodal.distributed.gather`), so the global
batch is the set of negatives. CUDA processes use ``nccl`` and one GPU each (``LOCAL_RANK``);
CPU processes use ``gloo``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from xmodal.distributed.gather import World, is_distributed, world

__all__ = [
    "LossModule",
    "backend_for",
    "init_process_group",
    "process_group",
    "shard_slice",
    "wrap_loss",
]


class LossModule(nn.Module):
    """A method seen as a module whose ``forward`` is its loss (what DDP needs to sync grads).

    Args:
        method: A :class:`~xmodal.methods.base.Method`.
    """

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: Any, stage: str = "main") -> dict[str, torch.Tensor]:
        return self.method.loss(batch, stage=stage)  # type: ignore[operator]


def wrap_loss(method: nn.Module, device: torch.device) -> nn.Module:
    """``DDP(LossModule(method))`` inside a process group, else the plain :class:`LossModule`.

    Parameters a stage does not use are allowed (``find_unused_parameters``): multi-stage
    methods train a subset of their parameters at a time.
    """
    module = LossModule(method)
    if not is_distributed():
        return module
    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def shard_slice(n: int, rank: int, size: int) -> slice:
    """The rows ``[rank · n/size, (rank + 1) · n/size)`` of a global batch of ``n`` rows.

    Raises:
        ValueError: ``n`` is not a multiple of ``size``, or ``rank`` is outside ``[0, size)``.
    """
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"need 0 <= rank < size, got rank {rank}, size {size}")
    if n % size:
        raise ValueError(f"a global batch of {n} rows does not split into {size} equal shards")
    per = n // size
    return slice(rank * per, (rank + 1) * per)


def backend_for(device: str | torch.device) -> str:
    """``nccl`` for CUDA devices (when NCCL is built in), ``gloo`` otherwise."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda" and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def init_process_group(
    device: str = "auto", *, init_method: str | None = None, timeout_s: float = 1800
) -> tuple[World, torch.device]:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    ``device="auto"`` picks ``cuda:<LOCAL_RANK>`` when CUDA is available, else ``cpu``.
    Returns this process's :class:`World` and device.

    Raises:
        ValueError: the torchrun environment variables are missing.
    """
    missing = [v for v in ("RANK", "WORLD_SIZE") if v not in os.environ]
    if missing and init_method is None:
        raise ValueError(
            f"--ddp needs to run under torchrun (environment lacks {', '.join(missing)}); "
            "e.g. torchrun --nproc-per-node 2 -m xmodal.cli train ... --ddp"
        )
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        dev = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(
            backend_for(dev), init_method=init_method, timeout=timedelta(seconds=timeout_s)
        )
    return world(), dev


@contextmanager
def process_group(device: str = "auto") -> Iterator[tuple[World, torch.device]]:
    """:func:`init_process_group` for a ``with`` block; the group is destroyed on exit."""
    started = not dist.is_initialized()
    w, dev = init_process_group(device)
    try:
        yield w, dev
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()

"""Run a function in every process of a 2-process CPU (gloo) group and collect what it returns."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["run_in_gloo_group"]


def _entry(
    rank: int, size: int, init_file: str, out_dir: str, fn: Callable[[int, int], Any]
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    try:
        torch.save(fn(rank, size), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_in_gloo_group(fn: Callable[[int, int], Any], tmp: Path, size: int = 2) -> list[Any]:
    """``[fn(rank, size) for each rank]``, each computed in its own process of one gloo group.

    ``fn`` must be a module-level function (the processes are spawned) and return something
    ``torch.save`` can write.
    """
    mp.spawn(_entry, args=(size, str(tmp / "init"), str(tmp), fn), nprocs=size, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(size)]

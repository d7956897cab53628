"""Scale-out of training on torch's own engine: ``torchrun`` + DistributedDataParallel.

::

    from xmodal.distributed import gather_with_grad, is_distributed, world

    img = gather_with_grad(local_img)   # [world * B, d]; the identity in a single process

The contrastive losses (``infonce``, ``vse``, ``cusa``) call :func:`gather_with_grad` on their
embeddings and :func:`gather` on row indices and teacher features, so under ``torchrun`` every
process scores its rows against the *global* batch. The trainer wraps the method in DDP
(:func:`xmodal.distributed.ddp.wrap_loss`) and shards each global batch by rank.
Importing this package does not start or join a process group.
"""

from __future__ import annotations

from xmodal.distributed.gather import World, gather, gather_with_grad, is_distributed, world

__all__ = ["World", "gather", "gather_with_grad", "is_distributed", "world"]

"""The shared shape of embedding methods: one head (tower) per modality."""

from __future__ import annotations

import functools
from typing import TypeVar

import torch
from torch import nn

from xmodal.methods.base import Batch, Method, MethodConfig, Outputs, Stage
from xmodal.models.backbone_heads import BackboneTopHead, build_tower
from xmodal.models.heads import l2_normalize

__all__ = ["DualHeadMethod"]

C = TypeVar("C", bound=MethodConfig)


class DualHeadMethod(Method[C]):
    """A method whose embeddings are the L2-normalised outputs of two heads.

    The heads are the config's towers (:func:`xmodal.models.build_tower`): by default
    (``"mlp"``) a :class:`~xmodal.models.ProjectionHead` over frozen features; a backbone tower
    (``text_tower="minilm-top2"``, ``image_tower="efficientnet-top1"``) also trains copies of the
    backbone's top layers over cached intermediate features, its copied layers at
    ``lr * tower_lr_scale``. With ``tower_probe_fraction > 0`` the copied layers stay fixed for
    that share of the epochs (stage ``"probe"``: projections only) and are trained with
    everything else in stage ``"main"`` (linear probing, then fine-tuning).

    The forward pass embeds both sides of every row (:class:`Outputs` ``image``, ``text``:
    L2-normalised, as the retrieval embeddings are).
    """

    def __init__(self, config: C, image_dim: int, text_dim: int) -> None:
        super().__init__(config, image_dim, text_dim)
        if not 0.0 <= config.tower_probe_fraction < 1.0:
            raise ValueError(
                f"tower_probe_fraction must be in [0, 1), got {config.tower_probe_fraction}"
            )
        tower = functools.partial(
            build_tower,
            out_dim=config.embed_dim,
            hidden=config.hidden,
            dropout=config.dropout,
            lr_scale=config.tower_lr_scale,
        )
        self.image_head = tower(config.image_tower, image_dim)
        self.text_head = tower(config.text_tower, text_dim)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the towers' copied backbone layers (none for ``mlp`` towers)."""
        return [
            p
            for head in (self.image_head, self.text_head)
            if isinstance(head, BackboneTopHead)
            for p in head.backbone.parameters()
            if p.requires_grad
        ]

    def stages(self) -> list[Stage]:
        params = [p for p in self.parameters() if p.requires_grad]
        probe = self.config.tower_probe_fraction
        backbone = {id(p) for p in self.backbone_parameters()}
        if probe <= 0 or not backbone:
            return [Stage("main", params)]
        heads_only = [p for p in params if id(p) not in backbone]
        return [Stage("probe", heads_only, probe), Stage("main", params, 1.0 - probe)]

    def forward(self, batch: Batch, stage: str = "main") -> Outputs:
        return Outputs(
            image_index=batch.image_index,
            image=self.embed_image(batch.image),
            text=self.embed_text(batch.text),
        )

    def embed_image(self, features: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.image_head(features))

    def embed_text(self, features: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.text_head(features))

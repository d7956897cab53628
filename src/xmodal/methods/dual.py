"""The shared shape of embedding methods: one projection head per modality."""

from __future__ import annotations

import torch

from xmodal.methods.base import Method, MethodConfig
from xmodal.models.heads import ProjectionHead, l2_normalize

__all__ = ["DualHeadMethod"]


class DualHeadMethod(Method):
    """A method whose embeddings are L2-normalised outputs of two :class:`ProjectionHead`."""

    def __init__(self, config: MethodConfig, image_dim: int, text_dim: int) -> None:
        super().__init__(config, image_dim, text_dim)
        self.image_head = ProjectionHead(image_dim, config.embed_dim, config.hidden, config.dropout)
        self.text_head = ProjectionHead(text_dim, config.embed_dim, config.hidden, config.dropout)

    def embed_image(self, features: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.image_head(features))

    def embed_text(self, features: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.text_head(features))

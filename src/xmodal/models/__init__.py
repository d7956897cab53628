"""Trainable heads that sit on top of frozen encoder features."""

from xmodal.models.heads import ProjectionHead, l2_normalize

__all__ = ["ProjectionHead", "l2_normalize"]

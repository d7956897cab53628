"""Trainable heads that sit on top of frozen encoder features."""

from xmodal.models.backbone_heads import (
    BackboneTopHead,
    EfficientNetTopHead,
    MiniLMTopHead,
    build_tower,
    list_towers,
    tower_encoder,
)
from xmodal.models.heads import ProjectionHead, l2_normalize
from xmodal.models.param_groups import lr_scale, param_groups, set_lr_scale

__all__ = [
    "BackboneTopHead",
    "EfficientNetTopHead",
    "MiniLMTopHead",
    "ProjectionHead",
    "build_tower",
    "l2_normalize",
    "list_towers",
    "lr_scale",
    "param_groups",
    "set_lr_scale",
    "tower_encoder",
]

"""Training objectives, one module per method, found by name through the registry."""

from xmodal.methods.base import Batch, Method, MethodConfig, Stage, TrainingData
from xmodal.methods.registry import (
    build_method,
    config_from_dict,
    config_to_dict,
    get_method_class,
    list_methods,
    parse_method_name,
    register_method,
)

__all__ = [
    "Batch",
    "Method",
    "MethodConfig",
    "Stage",
    "TrainingData",
    "build_method",
    "config_from_dict",
    "config_to_dict",
    "get_method_class",
    "list_methods",
    "parse_method_name",
    "register_method",
]

"""Training objectives, one module per method, found by name through the registry."""

from xmodal.methods.base import Batch, Method, MethodConfig, Outputs, Stage, Terms, TrainingData
from xmodal.methods.registry import (
    build_method,
    config_from_dict,
    config_to_dict,
    get_method_class,
    list_methods,
    method_config,
    parse_method_name,
    register_method,
)

__all__ = [
    "Batch",
    "Method",
    "MethodConfig",
    "Outputs",
    "Stage",
    "Terms",
    "TrainingData",
    "build_method",
    "config_from_dict",
    "config_to_dict",
    "get_method_class",
    "list_methods",
    "method_config",
    "parse_method_name",
    "register_method",
]

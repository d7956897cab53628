"""Methods found by name: ``build_method("infonce", image_dim, text_dim, temperature=0.05)``.

Wrapper methods take their base in parentheses: ``"cusa(vse)"``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from typing import Any

from xmodal.methods.base import Method, MethodConfig
from xmodal.options import build_config
from xmodal.registry import add_named

__all__ = [
    "build_method",
    "config_from_dict",
    "config_to_dict",
    "get_method_class",
    "list_methods",
    "method_config",
    "parse_method_name",
    "register_method",
    "requires_target",
]

_METHODS: dict[str, type[Method]] = {}
_WRAPPED = re.compile(r"^(?P<outer>[\w-]+)\((?P<inner>[\w()-]+)\)$")


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under ``cls.name``.

    Registering a name that is taken by another class warns and replaces it.
    """
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    return add_named(
        _METHODS, cls.name, cls, "method", lambda c: f"{c.__module__}.{c.__qualname__}"
    )


def _load_builtin() -> None:
    # Importing the package modules runs their @register_method decorators.
    import xmodal.methods.builtin  # noqa: F401


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching a shell-style pattern."""
    _load_builtin()
    return sorted(n for n in _METHODS if fnmatch.fnmatch(n, pattern))


def parse_method_name(name: str) -> tuple[str, str | None]:
    """``"cusa(vse)"`` -> ``("cusa", "vse")``; ``"infonce"`` -> ``("infonce", None)``;
    wrappers nest: ``"ensemble(cusa(vse))"`` -> ``("ensemble", "cusa(vse)")``."""
    m = _WRAPPED.match(name.strip())
    if m:
        return m["outer"], m["inner"]
    return name.strip(), None


def get_method_class(name: str) -> type[Method]:
    """The class registered as ``name`` (the outer name of a wrapped method)."""
    _load_builtin()
    outer, _ = parse_method_name(name)
    try:
        return _METHODS[outer]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(_METHODS))}") from None


def requires_target(name: str) -> bool:
    """Whether the method ``name`` (or a method it wraps) trains on an unpaired target domain."""
    outer, inner = parse_method_name(name)
    if get_method_class(outer).needs_target:
        return True
    return inner is not None and requires_target(inner)


def config_from_dict(config_cls: type[MethodConfig], values: dict[str, Any]) -> MethodConfig:
    """Build a config dataclass with typed coercion (:func:`xmodal.options.build_config`):
    strings become the fields' types; an unknown key is an error naming the closest option."""
    return build_config(config_cls, values, "option")


def config_to_dict(config: MethodConfig) -> dict[str, Any]:
    """JSON-able dict of a config dataclass."""
    return dataclasses.asdict(config)


def method_config(name: str, options: dict[str, Any]) -> MethodConfig:
    """The config of the method ``name`` (a wrapped name sets ``base``) from typed ``options``.

    Raises:
        ValueError: unknown method, unknown option, or a value that does not fit its field.
    """
    cls = get_method_class(name)
    _, inner = parse_method_name(name)
    if inner is not None:
        options = {**options, "base": inner}
    return config_from_dict(cls.Config, options)


def build_method(name: str, image_dim: int, text_dim: int, **options: Any) -> Method:
    """Instantiate the method ``name`` with config ``options`` for the given feature sizes."""
    return get_method_class(name)(method_config(name, options), image_dim, text_dim)

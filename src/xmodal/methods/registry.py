"""Methods found by name: ``build_method("infonce", image_dim, text_dim, temperature=0.05)``.

Wrapper methods take their base in parentheses: ``"cusa(vse)"``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import typing
from typing import Any

from xmodal.methods.base import Method, MethodConfig

__all__ = [
    "build_method",
    "config_from_dict",
    "config_to_dict",
    "get_method_class",
    "list_methods",
    "parse_method_name",
    "register_method",
]

_METHODS: dict[str, type[Method]] = {}
_WRAPPED = re.compile(r"^(?P<outer>[\w-]+)\((?P<inner>[\w()-]+)\)$")


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _METHODS[cls.name] = cls
    return cls


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


def _coerce(value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


def config_from_dict(config_cls: type[MethodConfig], values: dict[str, Any]) -> MethodConfig:
    """Build a config dataclass, rejecting unknown keys with a message that lists the known ones."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for {config_cls.__name__}; known: {sorted(fields)}"
        )
    hints = typing.get_type_hints(config_cls)
    return config_cls(**{k: _coerce(v, hints.get(k)) for k, v in values.items()})


def config_to_dict(config: MethodConfig) -> dict[str, Any]:
    """JSON-able dict of a config dataclass."""
    return dataclasses.asdict(config)


def build_method(name: str, image_dim: int, text_dim: int, **options: Any) -> Method:
    """Instantiate the method ``name`` with config ``options`` for the given feature sizes."""
    cls = get_method_class(name)
    _, inner = parse_method_name(name)
    if inner is not None:
        options = {**options, "base": inner}
    config = config_from_dict(cls.Config, options)
    return cls(config, image_dim, text_dim)

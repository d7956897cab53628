"""Options of configuration dataclasses, typed: one coercion for method and trainer options.

Method options (``-o embed_dim=512``), trainer options (``-t patience=3``) and presets all become
keyword arguments of a config dataclass through :func:`build_config`. A string value is coerced
to the dataclass field's annotated type (``"512"`` → ``512`` for an ``int``, ``"1024,512"`` →
``(1024, 512)`` for a ``tuple[int, ...]``, ``"none"`` → ``None`` for an optional field, a JSON
object for a ``dict``); other values are checked and converted where that is lossless (a list
becomes a tuple, an int a float). An unknown key is an error that suggests the closest name:

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Example:
    ...     patience: int = 10
    ...     hidden: tuple[int, ...] = (1024,)
    >>> build_config(Example, {"patience": "3", "hidden": "512,256"})
    Example(patience=3, hidden=(512, 256))
    >>> build_config(Example, {"patiense": "3"})
    Traceback (most recent call last):
    ...
    ValueError: unknown option 'patiense' for Example; did you mean 'patience'? known: hidden, patience
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["build_config", "check_known_options", "coerce_value", "option_types"]

T = TypeVar("T")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null"}


def option_types(config_cls: type) -> dict[str, Any]:
    """``{field name: resolved annotation}`` of a config dataclass."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_cls)}


def check_known_options(config_cls: type, keys: typing.Iterable[str], what: str = "option") -> None:
    """Raise a :class:`ValueError` naming the first unknown key, its closest match and all names.

    Args:
        config_cls: The dataclass whose field names are the known options.
        keys: The names given.
        what: How to call an option in the message (``"option"``, ``"trainer option"``).
    """
    known = sorted(f.name for f in dataclasses.fields(config_cls))
    for key in keys:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ";"
        raise ValueError(
            f"unknown {what} {key!r} for {config_cls.__name__}{hint} known: {', '.join(known)}"
        )


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type) and origin is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def coerce_value(value: Any, annotation: Any, name: str = "value") -> Any:
    """``value`` as the type ``annotation`` describes (strings are parsed; see the module doc).

    Raises:
        ValueError: the value does not fit the type (the message names ``name`` and the type).
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)

    def bad() -> ValueError:
        return ValueError(f"option {name}={value!r}: expected {_describe(annotation)}")

    if annotation is Any:
        return _json_or_text(value) if isinstance(value, str) else value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            if type(None) in args:
                return None
            raise bad()
        for arm in (a for a in args if a is not type(None)):
            try:
                return coerce_value(value, arm, name)
            except ValueError:
                continue
        raise bad()
    if origin is typing.Literal:
        for choice in args:
            try:
                if coerce_value(value, type(choice), name) == choice:
                    return choice
            except ValueError:
                continue
        raise bad()
    if origin is tuple:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith(("[", "(")):
                parsed = _json_or_text(text.replace("(", "[").replace(")", "]"))
                if not isinstance(parsed, list):
                    raise bad()
                value = parsed
            else:
                value = [part.strip() for part in text.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise bad()
        item = args[0] if args else Any
        if (len(args) == 2 and args[1] is Ellipsis) or len(args) <= 1:
            return tuple(coerce_value(v, item, name) for v in value)
        if len(value) != len(args):
            raise bad()
        return tuple(coerce_value(v, a, name) for v, a in zip(value, args, strict=True))
    if origin is dict or annotation is dict:
        parsed = _json_or_text(value) if isinstance(value, str) else value
        if not isinstance(parsed, dict):
            raise bad()
        return dict(parsed)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad()
    if annotation is int:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise bad() from None
        raise bad()
    if annotation is float:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise bad() from None
        raise bad()
    if annotation is str:
        if isinstance(value, str):
            return value
        raise bad()
    return value


def build_config(config_cls: type[T], values: Mapping[str, Any], what: str = "option") -> T:
    """An instance of the dataclass ``config_cls`` from ``values``, every value coerced to its
    field's type; unknown keys raise the friendly :func:`check_known_options` error."""
    check_known_options(config_cls, values, what)
    types_ = option_types(config_cls)
    return config_cls(**{k: coerce_value(v, types_[k], k) for k, v in values.items()})

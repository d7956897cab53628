"""The one way a name enters a registry: a name already taken by something else warns.

Method and preset registries add their entries through :func:`add_named`, so replacing an
entry (a plug-in that reuses a built-in name, a preset file shadowing another) is never silent.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, MutableMapping
from typing import TypeVar

__all__ = ["add_named"]

T = TypeVar("T")


def add_named(
    table: MutableMapping[str, T],
    name: str,
    entry: T,
    kind: str,
    describe: Callable[[T], str] = repr,
) -> T:
    """Put ``entry`` under ``name``; if another (unequal) entry held the name, warn and replace.

    Args:
        table: The registry.
        name: The name to register.
        entry: What the name will mean.
        kind: What the registry holds (``"method"``, ``"preset"``), for the warning.
        describe: Says where an entry came from, for the warning.
    """
    old = table.get(name)
    if old is not None and old is not entry and old != entry:
        warnings.warn(
            f"{kind} {name!r} was registered by {describe(old)}; {describe(entry)} replaces it",
            stacklevel=3,
        )
    table[name] = entry
    return entry

"""Exceptions raised at xmodal's boundaries (files, CLI, HTTP)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = [
    "EXTRAS",
    "BadInputError",
    "MissingExtraError",
    "XmodalError",
    "import_extra",
    "missing_extra",
    "require_extra",
    "user_message",
]

#: Optional dependencies by top-level module, with the extra of ``pyproject.toml`` that installs
#: each (``pip install 'xmodal[EXTRA]'``).
EXTRAS: dict[str, str] = {
    "fastapi": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "python_multipart": "serve",
    "prometheus_client": "serve",
    "ray": "scale",
    "open_clip": "clip",
    "timm": "clip",
}


class XmodalError(Exception):
    """Base class of every error xmodal raises on purpose."""


class BadInputError(XmodalError, ValueError):
    """Input data that cannot be used, with the file (and line) it came from.

    Args:
        path: The file that holds the bad input.
        reason: What is wrong, in words a user can act on.
        line: 1-based line number inside ``path`` when the input is line-oriented.
    """

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.reason = reason
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {reason}")


class MissingExtraError(XmodalError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it.

    Args:
        module: The top-level module that failed to import (``fastapi``).
        extra: The extra of ``pyproject.toml`` that installs it (``serve``).
        needed_by: What needs it, in words (``xmodal serve``).
    """

    def __init__(self, module: str, extra: str, needed_by: str | None = None) -> None:
        self.module = module
        self.extra = extra
        who = f"{needed_by} needs" if needed_by else "this needs"
        super().__init__(
            f"{who} the {extra} extra ({module} is not installed): pip install 'xmodal[{extra}]'",
            name=module,
        )


def missing_extra(error: BaseException, needed_by: str | None = None) -> MissingExtraError | None:
    """The :class:`MissingExtraError` behind ``error``, if it (or what caused it) is a failed
    import of an optional dependency listed in :data:`EXTRAS`; ``None`` otherwise.

    Example:
        >>> missing_extra(ModuleNotFoundError("No module named 'ray'", name="ray"), "--ray")
        MissingExtraError("--ray needs the scale extra (ray is not installed): pip install 'xmodal[scale]'")
        >>> missing_extra(ValueError("bad")) is None
        True
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MissingExtraError):
            return (
                current
                if needed_by is None
                else MissingExtraError(current.module, current.extra, needed_by)
            )
        if isinstance(current, ImportError) and current.name:
            module = current.name.partition(".")[0]
            if module in EXTRAS:
                return MissingExtraError(module, EXTRAS[module], needed_by)
        current = current.__cause__ or current.__context__
    return None


def import_extra(module: str, *submodules: str, needed_by: str | None = None) -> ModuleType:
    """Import an optional dependency (and ``submodules`` of it), or raise
    :class:`MissingExtraError` naming the extra that installs it."""
    try:
        for name in (module, *submodules):
            importlib.import_module(name)
    except ImportError as e:
        found = missing_extra(e, needed_by)
        if found is None:
            raise
        raise found from e
    return sys.modules[module]


def require_extra(*modules: str, needed_by: str | None = None) -> None:
    """Raise :class:`MissingExtraError` unless every optional module in ``modules`` is installed
    (found without importing it), for a check before long work that needs it at the end."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(module, EXTRAS[module], needed_by)


def user_message(error: BaseException, needed_by: str | None = None) -> str | None:
    """One line for an error the user can act on; ``None`` for an unexpected one (a bug).

    Acted on: a missing optional extra (the line names it), xmodal's own errors, ``ValueError``
    from validation (bad input, options, JSON), ``OSError`` (a missing file, a full disk,
    permissions) and ``ImportError`` of any other module.

    Example:
        >>> user_message(FileNotFoundError(2, "No such file or directory", "runs/x/model.pt"))
        'No such file or directory: runs/x/model.pt'
        >>> user_message(RuntimeError("shape mismatch")) is None
        True
    """
    extra = missing_extra(error, needed_by)
    if extra is not None:
        return str(extra)
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        target = f"{error.filename} -> {error.filename2}" if error.filename2 else error.filename
        return f"{error.strerror}: {target}"
    if isinstance(error, XmodalError | ValueError | OSError | ImportError):
        return str(error) or type(error).__name__
    return None

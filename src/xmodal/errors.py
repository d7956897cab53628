"""Exceptions raised at xmodal's boundaries (files, CLI, HTTP)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["BadInputError", "XmodalError"]


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

"""Crash-safe file updates: a reader sees the old file or the new one, never half of one.

Write a temporary file in the same folder, fsync it, ``os.replace`` it over the target and fsync
the folder so that the rename survives a power cut. :func:`exclusive_lock` lets two processes
that fill the same file take turns.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "exclusive_lock", "fsync_dir", "replace_file", "write_json_atomic"]


def fsync_dir(folder: str | Path) -> None:
    """Make a rename or unlink inside ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_file(src: str | Path, dst: str | Path) -> None:
    """Atomically move ``src`` over ``dst`` (same folder) and make the rename durable."""
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename over ``path``.

    The rename is atomic on POSIX file systems, so a crash at any point leaves either the previous
    file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        replace_file(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, obj: Any, *, sort_keys: bool = False) -> Path:
    """Write ``obj`` as indented JSON, atomically (values JSON cannot hold become strings)."""
    text = json.dumps(obj, indent=2, sort_keys=sort_keys, default=str) + "\n"
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the ``with`` block.

    Two processes filling the same cache entry then take turns; the lock is released when the
    holder exits, even when it is killed. Where ``fcntl`` is missing (Windows) no lock is taken.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)

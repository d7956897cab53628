"""Crash-safe file updates: a reader sees the old file or the new one, never half of one.

Write a temporary file in the same folder, fsync it, ``os.replace`` it over the target and fsync
the folder so that the rename survives a power cut. :func:`exclusive_lock` lets two processes
that fill the same file take turns. :func:`storage_full` recognises a full disk (an ``OSError``
or SQLite's own words) so that callers can raise :class:`StorageFullError`, which names the
path, the free space and the space needed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from xmodal.errors import XmodalError

__all__ = [
    "StorageFullError",
    "atomic_write",
    "default_cache_dir",
    "exclusive_lock",
    "fsync_dir",
    "replace_file",
    "storage_full",
    "write_json_atomic",
]

#: ``errno`` values that mean the storage is full (no space, quota, file too large).
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def storage_full(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the disk is full."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            return True
        if isinstance(current, sqlite3.Error) and "full" in str(current).lower():
            return True  # "database or disk is full"
        current = current.__cause__ or current.__context__
    return False


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")  # pragma: no cover


class StorageFullError(XmodalError, OSError):
    """A write that ran out of space: names the path, the free space and the space needed.

    ``errno`` is ``ENOSPC``, so code that handles a full disk by errno handles this too.

    Args:
        path: What was being written (a file or folder).
        needed: Bytes the write needs (at least), when known.
        done: What stays as it was, for the message (``"the index is unchanged"``).
    """

    def __init__(self, path: str | Path, needed: int | None = None, done: str = "") -> None:
        self.path = Path(path)
        self.needed = needed
        probe = self.path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            self.free: int | None = shutil.disk_usage(probe).free
        except OSError:
            self.free = None
        free = f"{_size(self.free)} free" if self.free is not None else "free space unknown"
        need = f", about {_size(needed)} needed" if needed is not None else ""
        tail = f"; {done}" if done else ""
        self.message = f"no space left on the device holding {self.path} ({free}{need}){tail}"
        super().__init__(self.message)
        self.errno = errno.ENOSPC

    def __str__(self) -> str:
        return self.message


def default_cache_dir() -> Path:
    """The feature cache (and exported-model store) root: ``$XMODAL_CACHE``, else ``~/.cache/xmodal``."""
    return Path(os.environ.get("XMODAL_CACHE", Path.home() / ".cache" / "xmodal"))


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

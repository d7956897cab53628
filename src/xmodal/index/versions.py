"""Copy-on-write versions: write a whole new version folder, then swap the ``CURRENT`` pointer.

A writer (under the index's exclusive lock) fills ``versions/.tmp-<random>/``, fsyncs every file,
writes the manifest with each file's size and SHA-256, renames the folder to ``versions/vNNNNNN``
and finally replaces ``CURRENT`` atomically. Killed at any point before that last rename, it
leaves ``CURRENT`` pointing at the previous, untouched version; the leftovers are deleted by the
next writer. After a commit, versions other than the new one and its parent are deleted (the
parent stays for readers that opened it a moment ago; open memory maps survive deletion anyway).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from xmodal.index.manifest import (
    MANIFEST,
    POINTER,
    VERSIONS,
    IndexManifest,
    Pointer,
    file_sha256,
    read_pointer,
    version_dir_name,
)

__all__ = ["LOCK", "VersionWriter", "current_pointer", "fsync_dir", "write_pointer", "writer_lock"]

LOCK = ".lock"
_VERSION_RE = re.compile(r"^v(\d{6,})$")


@contextlib.contextmanager
def writer_lock(index_dir: Path) -> Iterator[None]:
    """Exclusive lock for writers of one index (readers never take it).

    An advisory ``fcntl`` lock on ``INDEX_DIR/.lock``: released when the holder exits, even when
    it is killed. Where ``fcntl`` is missing (Windows) no lock is taken.
    """
    index_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    with open(index_dir / LOCK, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def fsync_dir(folder: Path) -> None:
    """Make renames inside ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_pointer(index_dir: Path, pointer: dict[str, int | str]) -> None:
    """Replace ``CURRENT`` atomically (temporary file, fsync, rename, fsync of the folder)."""
    text = json.dumps(pointer, indent=2, sort_keys=True) + "\n"
    path = index_dir / POINTER
    tmp = index_dir / f".{POINTER}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(index_dir)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


class VersionWriter:
    """Builds one new version folder; call :meth:`commit` to publish it (under the writer lock).

    :class:`~xmodal.index.writer.IndexWriter` drives it: :meth:`abort` when its ``with`` block
    fails.

    Args:
        index_dir: The index folder.
        parent: The committed version this one replaces (``None`` for a first build).
    """

    def __init__(self, index_dir: Path, parent: Pointer | None) -> None:
        self.index_dir = index_dir
        self.parent = parent
        self.versions = index_dir / VERSIONS
        self.versions.mkdir(parents=True, exist_ok=True)
        self.tmp = self.versions / f".tmp-{uuid.uuid4().hex}"
        self.tmp.mkdir()
        self.files: dict[str, dict[str, int | str]] = {}

    def path(self, name: str) -> Path:
        """Where to write the file ``name`` (parent folders created)."""
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def finish_file(self, name: str) -> None:
        """Fsync a file written at :meth:`path` and record its size and checksum."""
        p = self.tmp / name
        _fsync_file(p)
        self.files[name] = {"bytes": p.stat().st_size, "sha256": file_sha256(p)}

    def write(self, name: str, save: Callable[[Path], object]) -> None:
        """Write the file ``name`` with ``save(path)``, then :meth:`finish_file` it."""
        save(self.path(name))
        self.finish_file(name)

    def link(self, source_dir: Path, name: str, info: dict[str, int | str] | None = None) -> None:
        """Take file ``name`` unchanged from ``source_dir`` (hard link; copy where links fail)."""
        src, dst = source_dir / name, self.path(name)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
            _fsync_file(dst)
        if info is None:
            self.files[name] = {"bytes": dst.stat().st_size, "sha256": file_sha256(dst)}
        else:
            self.files[name] = dict(info)

    def commit(self, manifest: IndexManifest, keep_parent: bool = True) -> IndexManifest:
        """Write the manifest, publish the folder as the next version and point ``CURRENT`` at it."""
        manifest.files = dict(sorted(self.files.items()))
        version = self._next_version()
        manifest.version = version
        text = manifest.to_json()
        mpath = self.tmp / MANIFEST
        with open(mpath, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        for folder in sorted({p.parent for p in self.tmp.rglob("*")} | {self.tmp}):
            fsync_dir(folder)
        final = self.versions / version_dir_name(version)
        os.rename(self.tmp, final)
        fsync_dir(self.versions)
        pointer: dict[str, int | str] = {
            "version": version,
            "dir": final.name,
            "manifest_sha256": file_sha256(final / MANIFEST),
        }
        write_pointer(self.index_dir, pointer)
        self._collect(final.name, keep_parent)
        return manifest

    def abort(self) -> None:
        """Delete the unfinished folder."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _next_version(self) -> int:
        numbers = [
            int(m.group(1)) for p in self.versions.iterdir() if (m := _VERSION_RE.match(p.name))
        ]
        if self.parent is not None:
            numbers.append(self.parent.version)
        return max(numbers, default=0) + 1

    def _collect(self, current: str, keep_parent: bool) -> None:
        keep = {current}
        if keep_parent and self.parent is not None:
            keep.add(self.parent.dir)
        for p in self.versions.iterdir():
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)


def current_pointer(index_dir: Path) -> Pointer | None:
    """The committed pointer, or ``None`` when the folder holds no committed version."""
    if not (index_dir / POINTER).is_file():
        return None
    return read_pointer(index_dir)

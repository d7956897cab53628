"""Which cached image rows still describe their files: one content digest per row.

Every image entry of the feature cache has a sidecar ``<entry>.digests.npy``: a ``[rows, 16]``
uint8 array holding, for each row, the BLAKE2b-128 digest (:func:`~xmodal.encoders.batching.
content_digest`) of the exact bytes that were decoded to compute it (the reader hashes them while
reading them for decoding, so it costs no extra read). Before cached rows are handed out, the
files are hashed again (:func:`file_digests`: one read of each file, no decoding; about 0.3 s for
the 166 MB of Flickr8k on two cores) and every row whose digest differs is encoded again. So an
image replaced by a different one of the same byte size, the same name and even the same
modification time is never served stale features.

Entries written before digests existed (they have no sidecar) are migrated once
(:func:`migrate_digests`): when every image file's modification time is no later than the
entry's ``created`` time, the current files are taken to be the ones that were encoded and their
digests are recorded. That trusts that no file was replaced, between that encoding and this first
use, by a different file of the same byte size carrying an older modification time (``cp -p``,
``rsync -t`` or ``tar x`` of other content); any file modified after the entry was written makes
the whole entry encode again instead.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np

from xmodal.encoders.batching import DIGEST_SIZE, content_digest
from xmodal.features.manifest import Manifest
from xmodal.io import atomic_write

__all__ = ["digests_path", "file_digests", "migrate_digests", "read_digests", "write_digests"]

_MISSING = bytes(DIGEST_SIZE)  # the digest recorded for a file that cannot be read


def digests_path(npy: Path) -> Path:
    """The sidecar of a cache entry: ``<stem>.digests.npy`` beside ``<stem>.npy``."""
    return npy.with_name(npy.name.removesuffix(".npy") + ".digests.npy")


def _digest_file(path: Path) -> bytes:
    try:
        return content_digest(path.read_bytes())
    except OSError:
        return _MISSING


def file_digests(paths: Sequence[Path], workers: int | None = None) -> np.ndarray:
    """``[len(paths), 16]`` uint8 content digests of the files (all zeros for an unreadable one).

    Reads and hashes in a few threads (both release the GIL).
    """
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = list(pool.map(_digest_file, paths, chunksize=64))
    out = np.frombuffer(b"".join(digests), dtype=np.uint8)
    return out.reshape(len(paths), DIGEST_SIZE).copy()


def read_digests(npy: Path, rows: int) -> np.ndarray | None:
    """The entry's recorded digests, or ``None`` when the sidecar is missing or malformed."""
    path = digests_path(npy)
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if arr.shape != (rows, DIGEST_SIZE) or arr.dtype != np.uint8:
        return None
    return arr


def write_digests(npy: Path, digests: np.ndarray) -> None:
    """Write the sidecar atomically (a reader sees the old one or the new one)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(digests, dtype=np.uint8), allow_pickle=False)
    atomic_write(digests_path(npy), lambda p: p.write_bytes(buf.getvalue()))


def migrate_digests(
    npy: Path, manifest: Manifest, paths: Sequence[Path], current: np.ndarray
) -> np.ndarray | None:
    """Record ``current`` as the digests of an entry written before digests existed.

    Done only when every file's modification time is no later than ``manifest.created`` (what
    that trusts is said in the module docstring); returns the recorded digests, or ``None`` when
    the entry must be encoded again.
    """
    try:
        created = datetime.fromisoformat(manifest.created).timestamp()
        newest = max((p.stat().st_mtime for p in paths), default=0.0)
    except (OSError, ValueError):
        return None
    # ``created`` is rounded down to the second: allow that second.
    if newest > created + 1.0 or not (current != 0).any(axis=1).all():
        return None
    write_digests(npy, current)
    return current

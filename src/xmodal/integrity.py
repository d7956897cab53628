"""What reading a run or index folder trusts: checksums of every file, and never a pickle.

* :func:`file_sha256`, :func:`file_entry` and :func:`check_files` — the per-file SHA-256 lists
  that index versions (``manifest.json``) and run directories (``checksums.json``) carry, and
  their check on load (a missing, truncated or altered file is named).
* :func:`read_json_file` — JSON whose every failure names the file (and line).
* :func:`refuse_pickle` — data files are JSON, ``.npy`` / ``.npz`` (``allow_pickle=False``),
  safetensors or ``torch.load(weights_only=True)`` checkpoints; a pickle where data is expected
  is refused before a byte of it is unpickled (unpickling can run arbitrary code).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from xmodal.errors import BadInputError

__all__ = [
    "check_files",
    "file_entry",
    "file_sha256",
    "looks_like_pickle",
    "read_json_file",
    "refuse_pickle",
]


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_entry(path: str | Path) -> dict[str, Any]:
    """``{"bytes": size, "sha256": digest}`` of a file, as checksum lists hold it."""
    path = Path(path)
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def check_files(
    folder: Path,
    files: Mapping[str, Mapping[str, Any]],
    error: Callable[[Path, str], Exception],
    checksums: bool = True,
) -> None:
    """Check that every listed file exists with its size (and SHA-256).

    Args:
        folder: Where the relative names of ``files`` live.
        files: ``{relative name: {"bytes": int, "sha256": str}}``.
        error: Builds the exception to raise from ``(path, reason)``.
        checksums: Also hash every file (sizes only otherwise).

    Raises:
        Exception: ``error(path, reason)`` for the first missing, truncated or altered file.
    """
    for name, info in sorted(files.items()):
        path = folder / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise error(path, "file listed in the manifest is missing") from None
        if size != info["bytes"]:
            raise error(
                path, f"size {size} bytes, manifest says {info['bytes']} (truncated or replaced)"
            )
        if checksums and file_sha256(path) != info["sha256"]:
            raise error(path, "SHA-256 does not match the manifest (corrupt file)")


#: First bytes of a pickle of protocol 2 to 5 (what pickle, torch.save's legacy format and
#: joblib write).
_PICKLE_STARTS = tuple(bytes([0x80, proto]) for proto in range(2, 6))


def looks_like_pickle(path: str | Path) -> bool:
    """Whether the file starts like a pickle (protocol 2 or later)."""
    with open(path, "rb") as f:
        return f.read(2) in _PICKLE_STARTS


def refuse_pickle(path: str | Path, what: str) -> None:
    """Raise :class:`BadInputError` when the file at ``path`` is a pickle (it is never read).

    Args:
        path: A data file about to be read.
        what: What it should be, for the message (``"tfidf state"``).
    """
    if looks_like_pickle(path):
        raise BadInputError(
            path,
            f"this {what} is a pickle, which xmodal never loads (unpickling can run code); "
            "refit or retrain to write it as JSON + .npy",
        )


def read_json_file(path: Path) -> Any:
    """Parse a whole JSON file; every failure is a :class:`BadInputError` naming it."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadInputError(path, f"cannot read file ({e})") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise BadInputError(path, f"file is not valid UTF-8 ({e.reason})", line=line) from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        reason = f"malformed JSON ({e.msg}, column {e.colno})"
        raise BadInputError(path, reason, line=e.lineno) from e

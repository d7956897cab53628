"""The index folder's layout, its pointer file and the per-version manifest with checksums.

Layout::

    INDEX_DIR/
      CURRENT                 {"version": 7, "dir": "v000007", "manifest_sha256": "..."}
      .lock                   writers take turns on it (readers never lock)
      versions/
        v000006/              the previous version, kept for readers that opened it
        v000007/
          manifest.json       what every file is: sizes, SHA-256, counts, dims, kinds, model
          meta.sqlite         item metadata (id, path, captions, labels)
          image.ids.npy       stable int64 id of each image row (ascending)
          image.float.faiss   float index over the embeddings
          image.binary.faiss  binary index over the codes
          text.*              the same for caption rows
          rotation.npz        code rotation (when codes are not a method's own hash head)
          model/              the run's config, checkpoint and split (trained runs)

A version folder is written whole under a temporary name, fsynced and renamed, and only then is
``CURRENT`` replaced atomically: a crash at any point leaves the previous version readable.
Files are never modified once their version is committed (unchanged files are hard-linked
into the next version), so readers can memory-map them safely.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xmodal import __version__
from xmodal.errors import XmodalError
from xmodal.integrity import check_files, file_sha256

__all__ = [
    "FORMAT",
    "MANIFEST",
    "POINTER",
    "VERSIONS",
    "CollectionInfo",
    "IndexFormatError",
    "IndexManifest",
    "Pointer",
    "file_sha256",
    "is_index_dir",
    "read_manifest",
    "read_pointer",
    "verify_files",
    "version_dir_name",
]

FORMAT = "xmodal-index/1"
POINTER = "CURRENT"
MANIFEST = "manifest.json"
VERSIONS = "versions"


class IndexFormatError(XmodalError):
    """An index folder that is missing, corrupt, or does not match what its manifest says.

    Args:
        path: The index folder or the file at fault.
        reason: What is wrong.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def version_dir_name(version: int) -> str:
    """``v000007`` for version 7."""
    return f"v{version:06d}"


def is_index_dir(path: str | Path) -> bool:
    """Whether ``path`` looks like an index folder (has a ``CURRENT`` pointer)."""
    return (Path(path) / POINTER).is_file()


@dataclass(frozen=True)
class Pointer:
    """Content of ``CURRENT``: the committed version and its manifest's checksum."""

    version: int
    dir: str
    manifest_sha256: str


def read_pointer(index_dir: str | Path) -> Pointer:
    """Read ``CURRENT``.

    Raises:
        IndexFormatError: no pointer (not an index, or a first build that never finished) or an
            unreadable one.
    """
    path = Path(index_dir) / POINTER
    if not path.is_file():
        raise IndexFormatError(
            index_dir,
            "not an xmodal index (no CURRENT file; build one with `xmodal index build`)",
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Pointer(int(raw["version"]), str(raw["dir"]), str(raw["manifest_sha256"]))
    except (ValueError, KeyError, TypeError) as e:
        raise IndexFormatError(path, f"unreadable pointer file ({e})") from e


@dataclass
class CollectionInfo:
    """One searchable collection (``image`` or ``text`` rows) of a version.

    Attributes:
        count: Rows.
        float_kind: Name of the float index's kind (:mod:`xmodal.index.kinds`).
        binary_kind: Name of the binary index's kind.
        params: Index parameters (HNSW ``M``, IVF ``nlist``, PQ ``m``, search defaults).
        raw: Extra raw arrays kept beside lossy or partitioned indexes (``vectors``, ``codes``).
    """

    count: int
    float_kind: str
    binary_kind: str
    params: dict[str, Any] = field(default_factory=dict)
    raw: list[str] = field(default_factory=list)

    def kind_name(self, family: str) -> str:
        """The index kind of the ``float`` or ``binary`` family."""
        if family not in ("float", "binary"):
            raise ValueError(f"family must be float or binary, got {family!r}")
        return self.float_kind if family == "float" else self.binary_kind


@dataclass
class IndexManifest:
    """``manifest.json`` of one version.

    Attributes:
        version: Version number (1 for the first build).
        dim: Embedding size.
        bits: Code length.
        collections: ``{"image": CollectionInfo, "text": CollectionInfo}``.
        next_ids: The next stable id to hand out, per id space (``item``, ``text``).
        codes: How codes are made: ``{"source": "head" | "itq" | "random", ...}``.
        model: How queries and new items are encoded (``{"kind": "run" | "dual" | "none", ...}``).
        files: ``{relative path: {"bytes": int, "sha256": str}}`` for every file of the version.
    """

    version: int
    dim: int
    bits: int
    collections: dict[str, CollectionInfo]
    next_ids: dict[str, int]
    codes: dict[str, Any]
    model: dict[str, Any]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    format: str = FORMAT
    xmodal_version: str = __version__

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: Path) -> IndexManifest:
        """Parse, checking the format tag."""
        try:
            raw = json.loads(text)
            if raw.get("format") != FORMAT:
                raise IndexFormatError(
                    where, f"unsupported index format {raw.get('format')!r} (expected {FORMAT})"
                )
            raw["collections"] = {k: CollectionInfo(**v) for k, v in raw["collections"].items()}
            return cls(**raw)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise IndexFormatError(where, f"unreadable manifest ({e})") from e


def read_manifest(version_dir: Path, expected_sha256: str | None = None) -> IndexManifest:
    """Read a version's manifest, checking it against the pointer's checksum when given.

    Raises:
        IndexFormatError: missing, corrupt or foreign manifest.
    """
    path = version_dir / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise IndexFormatError(path, f"cannot read the manifest ({e})") from e
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise IndexFormatError(path, "manifest checksum does not match CURRENT (corrupt file)")
    return IndexManifest.from_json(data.decode("utf-8", errors="replace"), path)


def verify_files(version_dir: Path, manifest: IndexManifest, checksums: bool = True) -> None:
    """Check that every file the manifest lists exists with its size (and SHA-256).

    Raises:
        IndexFormatError: naming the first missing, truncated or altered file.
    """
    check_files(version_dir, manifest.files, IndexFormatError, checksums)

"""Open one committed version of an index, read-only, checked against its manifest.

A :class:`Snapshot` never changes: writers publish new versions beside it. Open a fresh
snapshot (or call :meth:`xmodal.search.Searcher.refresh`) to see later writes.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.index.closing import Closing
from xmodal.index.codes import CodeRotation
from xmodal.index.kinds import Family, IndexKind, get_kind
from xmodal.index.manifest import (
    VERSIONS,
    CollectionInfo,
    IndexFormatError,
    IndexManifest,
    read_manifest,
    read_pointer,
    verify_files,
)
from xmodal.index.metadata import MetadataReader

__all__ = [
    "COLLECTIONS",
    "META",
    "MODEL_DIR",
    "ROTATION",
    "Collection",
    "Snapshot",
    "collection_file",
]

COLLECTIONS = ("image", "text")
META = "meta.sqlite"
ROTATION = "rotation.npz"
MODEL_DIR = "model"

#: Attempts to open the current version when writers keep replacing it meanwhile.
_OPEN_ATTEMPTS = 8


def collection_file(collection: str, part: str) -> str:
    """File name of one part of a collection: ``ids.npy``, ``float.faiss``, ``binary.faiss``,
    ``vectors.npy`` (beside IVF-PQ) or ``codes.npy`` (beside binary IVF)."""
    return f"{collection}.{part}"


@dataclass
class Collection:
    """The rows of one modality in a snapshot.

    Attributes:
        name: ``image`` or ``text``.
        info: Its manifest entry (count, kinds, parameters).
        ids: ``[n]`` ascending stable int64 id of each row position.
        float_index: FAISS float index (labels = row positions).
        binary_index: FAISS binary index (labels = row positions).
        vectors: ``[n, d]`` exact float rows (from the flat/HNSW storage or ``vectors.npy``).
        codes: ``[n, bits / 8]`` packed codes (from the flat/HNSW storage or ``codes.npy``).
    """

    name: str
    info: CollectionInfo
    ids: np.ndarray
    float_index: Any = field(repr=False)
    binary_index: Any = field(repr=False)
    vectors: np.ndarray = field(repr=False)
    codes: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def kind(self, family: Family) -> IndexKind:
        """The kind of the ``float`` or ``binary`` index."""
        return get_kind(family, self.info.kind_name(family))

    def index(self, family: Family) -> Any:
        """The ``float`` or ``binary`` FAISS index."""
        return self.float_index if family == "float" else self.binary_index

    def params(self, family: Family) -> dict[str, Any]:
        """The stored parameters of the ``float`` or ``binary`` index."""
        return dict(self.info.params.get(family, {}))

    def positions(self, stable_ids: np.ndarray) -> np.ndarray:
        """Row positions of ``stable_ids`` (ids not in this collection are dropped)."""
        stable_ids = np.asarray(stable_ids, dtype=np.int64)
        if len(self.ids) == 0 or len(stable_ids) == 0:
            return np.zeros(0, dtype=np.int64)
        pos = np.searchsorted(self.ids, stable_ids)
        pos = np.minimum(pos, len(self.ids) - 1)
        return pos[self.ids[pos] == stable_ids].astype(np.int64)


def _load_collection(
    folder: Path, name: str, info: CollectionInfo, dim: int, bits: int, mmap: bool
) -> Collection:
    def fail(reason: str) -> IndexFormatError:
        return IndexFormatError(folder, f"{name} collection: {reason}")

    ids = np.load(folder / collection_file(name, "ids.npy"), mmap_mode="r" if mmap else None)
    if ids.dtype != np.int64 or ids.ndim != 1 or len(ids) != info.count:
        raise fail(f"ids.npy holds {ids.dtype} {ids.shape}, manifest says {info.count} int64 ids")
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise fail("ids.npy is not strictly ascending")
    try:
        fkind, bkind = get_kind("float", info.float_kind), get_kind("binary", info.binary_kind)
    except ValueError as e:  # written with a kind this process has not registered
        raise fail(str(e)) from None
    fidx = fkind.read(folder / collection_file(name, "float.faiss"), mmap)
    bidx = bkind.read(folder / collection_file(name, "binary.faiss"), mmap)
    if fidx.ntotal != info.count or fidx.d != dim:
        raise fail(
            f"float index has {fidx.ntotal} rows of {fidx.d}-d, manifest says {info.count} of {dim}-d"
        )
    if bidx.ntotal != info.count or bidx.d != bits:
        raise fail(
            f"binary index has {bidx.ntotal} rows of {bidx.d} bits, manifest says {info.count} of {bits}"
        )
    fkind.set_search_params(fidx, info.params.get("float", {}))
    bkind.set_search_params(bidx, info.params.get("binary", {}))
    vectors = fkind.stored_rows(fidx)
    if vectors is None:
        vectors = np.load(
            folder / collection_file(name, "vectors.npy"), mmap_mode="r" if mmap else None
        )
    codes = bkind.stored_rows(bidx)
    if codes is None:
        codes = np.load(
            folder / collection_file(name, "codes.npy"), mmap_mode="r" if mmap else None
        )
    if vectors.shape != (info.count, dim) or vectors.dtype != np.float32:
        raise fail(
            f"float rows are {vectors.dtype} {vectors.shape}, expected float32 ({info.count}, {dim})"
        )
    if codes.shape != (info.count, bits // 8) or codes.dtype != np.uint8:
        raise fail(
            f"codes are {codes.dtype} {codes.shape}, expected uint8 ({info.count}, {bits // 8})"
        )
    # plain ndarray views (of the memory maps): numpy's memmap subclass slows every indexing
    return Collection(
        name,
        info,
        ids.view(np.ndarray),
        fidx,
        bidx,
        vectors.view(np.ndarray),
        codes.view(np.ndarray),
    )


@dataclass
class Snapshot(Closing):
    """One committed, immutable version of an index; a context manager that closes it::

        with Snapshot.open("indexes/emoji") as snap:
            print(snap.version, len(snap.collections["image"]))

    Attributes:
        index_dir: The index folder.
        folder: This version's folder.
        manifest: Its manifest.
        collections: ``{"image": Collection, "text": Collection}``.
        meta: Its item metadata.
        rotation: The code rotation (``None`` when codes come from a method's hash head).
    """

    index_dir: Path
    folder: Path
    manifest: IndexManifest
    collections: dict[str, Collection]
    meta: MetadataReader = field(repr=False)
    rotation: CodeRotation | None = field(default=None, repr=False)

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def bits(self) -> int:
        return self.manifest.bits

    @classmethod
    def open(cls, index_dir: str | Path, *, mmap: bool = True, verify: bool = True) -> Snapshot:
        """Open the current version.

        Args:
            index_dir: The index folder.
            mmap: Memory-map the FAISS indexes and arrays instead of reading them into memory.
            verify: Check every file's SHA-256 against the manifest (reads every byte once;
                sizes, counts, dimensions and code lengths are always checked).

        Raises:
            IndexFormatError: not an index, or a file that is missing, corrupt or does not match
                the manifest.
        """
        index_dir = Path(index_dir)
        for attempt in range(_OPEN_ATTEMPTS):
            pointer = read_pointer(index_dir)
            try:
                return cls._open_version(
                    index_dir, pointer.dir, pointer.manifest_sha256, mmap, verify
                )
            except (FileNotFoundError, IndexFormatError) as e:
                # A writer may have replaced the version (and deleted this one) meanwhile: retry
                # with the new pointer. An unchanged pointer means the error is real.
                if read_pointer(index_dir) == pointer or attempt == _OPEN_ATTEMPTS - 1:
                    if isinstance(e, FileNotFoundError):
                        raise IndexFormatError(
                            index_dir, f"version {pointer.dir} is incomplete ({e})"
                        ) from e
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise IndexFormatError(index_dir, "could not open a stable version")  # pragma: no cover

    @classmethod
    def _open_version(
        cls, index_dir: Path, name: str, manifest_sha256: str, mmap: bool, verify: bool
    ) -> Snapshot:
        folder = index_dir / VERSIONS / name
        manifest = read_manifest(folder, manifest_sha256)
        verify_files(folder, manifest, checksums=verify)
        try:
            collections = {
                name: _load_collection(
                    folder, name, manifest.collections[name], manifest.dim, manifest.bits, mmap
                )
                for name in COLLECTIONS
            }
        except KeyError as e:
            raise IndexFormatError(folder, f"manifest lacks collection {e}") from e
        except RuntimeError as e:  # FAISS could not parse a file
            raise IndexFormatError(folder, f"unreadable FAISS index ({e})") from e
        except ValueError as e:  # numpy could not parse a file
            raise IndexFormatError(folder, f"unreadable array ({e})") from e
        try:
            meta = MetadataReader(folder / META)
            n_items, n_texts = meta.count("items"), meta.count("texts")
        except sqlite3.Error as e:
            raise IndexFormatError(folder / META, f"unreadable metadata database ({e})") from e
        if n_items != len(collections["image"]) or n_texts != len(collections["text"]):
            meta.close()
            raise IndexFormatError(
                folder,
                f"metadata has {n_items} items and {n_texts} captions, indexes have "
                f"{len(collections['image'])} and {len(collections['text'])}",
            )
        rotation = None
        if manifest.codes.get("rotation"):
            with open(folder / manifest.codes["rotation"], "rb") as f:
                rotation = CodeRotation.load(f)
            if rotation.bits != manifest.bits or rotation.mean.shape[0] != manifest.dim:
                meta.close()
                raise IndexFormatError(
                    folder / manifest.codes["rotation"],
                    f"rotation maps {rotation.mean.shape[0]}-d to {rotation.bits} bits, manifest "
                    f"says {manifest.dim}-d and {manifest.bits} bits",
                )
        return cls(index_dir, folder, manifest, collections, meta, rotation)

    def close(self) -> None:
        """Release the metadata connection (memory maps go with the object)."""
        self.meta.close()

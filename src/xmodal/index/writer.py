"""Create an index from encoded items, add items to it, remove items from it.

:class:`IndexWriter` stages changes under the index's writer lock and publishes them as one
complete new version (:mod:`xmodal.index.versions`) when its ``with`` block ends::

    with IndexWriter("indexes/emoji") as w:
        w.append(items)
        w.delete(["images/1F600.png"])
    # committed here; an exception inside the block aborts: the previous version stays
    # current, untouched, and no temporary files are left

Searches running meanwhile keep their snapshot and never see a half-written state.
Collections a version leaves unchanged are hard-linked, not rewritten. :func:`create_index`,
:func:`append_items` and :func:`delete_items` are one operation each. Cost: adding or removing
rewrites the changed collections' files (``O(rows)`` I/O); FAISS work is incremental (new rows
are encoded and inserted; trained IVF quantizers and HNSW graphs are kept) except that removing
rows from an HNSW graph rebuilds it.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np

from xmodal.index.items import EncodedItems, check_bits
from xmodal.index.kinds import FAMILIES, Family, IndexKind, choose_kind, get_kind
from xmodal.index.manifest import (
    VERSIONS,
    CollectionInfo,
    IndexFormatError,
    IndexManifest,
    Pointer,
    read_manifest,
)
from xmodal.index.metadata import MetadataReader, MetadataWriter
from xmodal.index.snapshot import COLLECTIONS, META, collection_file
from xmodal.index.versions import VersionWriter, current_pointer, writer_lock
from xmodal.io import StorageFullError, storage_full

__all__ = ["IndexWriter", "OnExists", "append_items", "create_index", "delete_items"]

OnExists = Literal["error", "skip", "replace"]

#: The FAISS file and the raw array (kept beside kinds that store no exact rows) per family.
_INDEX_FILE: dict[Family, str] = {"float": "float.faiss", "binary": "binary.faiss"}
_RAW: dict[Family, str] = {"float": "vectors", "binary": "codes"}


@dataclass
class _Rows:
    """A collection being written: stable ids, one FAISS index per family, and the raw rows of
    the families whose kind stores none."""

    info: CollectionInfo
    ids: np.ndarray
    indexes: dict[Family, Any]
    raw: dict[Family, np.ndarray | None]
    changed: bool = True

    def kind(self, family: Family) -> IndexKind:
        return get_kind(family, self.info.kind_name(family))

    def exact(self, family: Family) -> np.ndarray:
        """Every current row of ``family`` (positions 0..n-1)."""
        rows = self.kind(family).stored_rows(self.indexes[family])
        if rows is not None:
            return rows
        raw = self.raw[family]
        if raw is None:
            raise AssertionError(f"{self.info.kind_name(family)} stores no rows and none beside")
        return raw

    def append(self, ids: np.ndarray, rows: Mapping[Family, np.ndarray]) -> None:
        if len(ids) == 0:
            return
        for family in FAMILIES:
            self.kind(family).add(self.indexes[family], rows[family])
            raw = self.raw[family]
            if raw is not None:
                self.raw[family] = np.concatenate([raw, rows[family]])
        self.ids = np.concatenate([self.ids, ids.astype(np.int64)])
        self.info = replace(self.info, count=len(self.ids))
        self.changed = True

    def drop(self, stable_ids: np.ndarray) -> None:
        if len(self.ids) == 0 or len(stable_ids) == 0:
            return
        keep = np.flatnonzero(~np.isin(self.ids, stable_ids))
        if len(keep) == len(self.ids):
            return
        for family in FAMILIES:
            params = self.info.params.get(family, {})
            kind = self.kind(family)
            self.indexes[family] = kind.remove(
                self.indexes[family], keep, self.exact(family), params
            )
            raw = self.raw[family]
            if raw is not None:
                self.raw[family] = raw[keep]
        self.ids = self.ids[keep]
        self.info = replace(self.info, count=len(self.ids))
        self.changed = True


def _new_rows(
    ids: np.ndarray,
    rows: Mapping[Family, np.ndarray],
    widths: Mapping[Family, int],
    kinds: Mapping[Family, str],
    params: Mapping[str, Mapping[str, Any]],
) -> _Rows:
    """A new collection of ``rows`` (empty ones get the ``auto`` kind for 0 rows: flat)."""
    n = len(ids)
    names: dict[Family, str] = {}
    all_params: dict[str, dict[str, Any]] = {}
    indexes: dict[Family, Any] = {}
    raw: dict[Family, np.ndarray | None] = {}
    for family in FAMILIES:
        kind = choose_kind("auto" if n == 0 else kinds[family], family, n)
        p = kind.default_params(n, widths[family])
        p.update(params.get(family, {}))
        names[family], all_params[family] = kind.name, p
        indexes[family] = kind.new_index(widths[family], p, rows[family])
        empty = rows[family][:0]
        raw[family] = np.array(empty) if kind.stored_rows(indexes[family]) is None else None
    info = CollectionInfo(0, names["float"], names["binary"], all_params)
    out = _Rows(info, np.zeros(0, dtype=np.int64), indexes, raw)
    out.append(ids, rows)
    return out


def _load_rows(folder: Path, name: str, info: CollectionInfo) -> _Rows:
    """A committed collection read into memory, ready to modify."""
    ids = np.load(folder / collection_file(name, "ids.npy"))
    indexes: dict[Family, Any] = {}
    raw: dict[Family, np.ndarray | None] = {}
    for family in FAMILIES:
        kind = get_kind(family, info.kind_name(family))
        indexes[family] = kind.read(folder / collection_file(name, _INDEX_FILE[family]), False)
        raw[family] = (
            np.load(folder / collection_file(name, f"{_RAW[family]}.npy"))
            if kind.stored_rows(indexes[family]) is None
            else None
        )
    return _Rows(info, ids, indexes, raw, changed=False)


def _save_array(array: np.ndarray, path: Path) -> None:
    np.save(path, np.ascontiguousarray(array))


def _write_rows(vw: VersionWriter, name: str, rows: _Rows) -> CollectionInfo:
    vw.write(collection_file(name, "ids.npy"), functools.partial(_save_array, rows.ids))
    raw_names: list[str] = []
    for family in FAMILIES:
        kind, index = rows.kind(family), rows.indexes[family]
        vw.write(collection_file(name, _INDEX_FILE[family]), functools.partial(kind.write, index))
        raw = rows.raw[family]
        if raw is not None:
            vw.write(
                collection_file(name, f"{_RAW[family]}.npy"), functools.partial(_save_array, raw)
            )
            raw_names.append(_RAW[family])
    return replace(rows.info, count=len(rows.ids), raw=raw_names)


def _id_block(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int64)


def _item_rows(items: EncodedItems, which: Literal["image", "text"]) -> dict[Family, np.ndarray]:
    vectors = items.image_vectors if which == "image" else items.text_vectors
    codes = items.image_codes if which == "image" else items.text_codes
    return {
        "float": np.ascontiguousarray(vectors, dtype=np.float32),
        "binary": np.ascontiguousarray(codes),
    }


class IndexWriter:
    """Changes to one index, published as one new version when the ``with`` block ends.

    Entering takes the index's writer lock (other writers wait; readers never do). Inside the
    block, :meth:`create`, :meth:`append` and :meth:`delete` stage changes in a temporary
    version folder. A clean exit commits them (:attr:`manifest` is then the new version's, or
    the current one's when nothing changed); an exception aborts: the temporary folder is
    deleted and the current version stays as it was.

    Args:
        index_dir: The index folder (created by :meth:`create` when it holds no index).
    """

    def __init__(self, index_dir: str | Path) -> None:
        self.index_dir = Path(index_dir)
        self._stack: contextlib.ExitStack | None = None
        self._parent: Pointer | None = None
        self._folder: Path | None = None
        self._current: IndexManifest | None = None
        self._vw: VersionWriter | None = None
        self._meta: MetadataWriter | None = None
        self._collections: dict[str, _Rows] = {}
        self._base: IndexManifest | None = None
        self._fresh = False
        self._manifest: IndexManifest | None = None

    # --- the with block -----------------------------------------------------------------------
    def __enter__(self) -> IndexWriter:
        if self._stack is not None:
            raise RuntimeError("an IndexWriter is entered once")
        stack = contextlib.ExitStack()
        stack.enter_context(writer_lock(self.index_dir))
        try:
            self._parent = current_pointer(self.index_dir)
            if self._parent is not None:
                self._folder = self.index_dir / VERSIONS / self._parent.dir
                self._current = read_manifest(self._folder, self._parent.manifest_sha256)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        try:
            if exc_type is None:
                self.commit()
            elif exc is not None:
                self._abort_after(exc)
            else:
                self.abort()
        finally:
            if stack is not None:
                stack.close()  # releases the lock

    @property
    def manifest(self) -> IndexManifest:
        """The committed manifest (after the ``with`` block), else the current version's."""
        if self._manifest is not None:
            return self._manifest
        if self._current is None:
            raise IndexFormatError(self.index_dir, "not an xmodal index (no CURRENT file)")
        return self._current

    # --- staging ------------------------------------------------------------------------------
    def _require_open(self) -> None:
        if self._stack is None:
            raise RuntimeError("use IndexWriter in a with block: `with IndexWriter(dir) as w:`")

    def _require_index(self) -> tuple[Path, IndexManifest]:
        self._require_open()
        if self._base is not None:
            return self._folder or self.index_dir, self._base
        if self._folder is None or self._current is None:
            raise IndexFormatError(self.index_dir, "not an xmodal index (no CURRENT file)")
        return self._folder, self._current

    def _stage(self) -> MetadataWriter:
        """Load the current version for changing (once): collections, a copy of its metadata."""
        if self._meta is not None:
            return self._meta
        folder, manifest = self._require_index()
        self._collections = {
            name: _load_rows(folder, name, manifest.collections[name]) for name in COLLECTIONS
        }
        self._vw = VersionWriter(self.index_dir, self._parent)
        try:
            shutil.copyfile(folder / META, self._vw.path(META))
            self._meta = MetadataWriter(self._vw.path(META), create=False)
        except BaseException:
            self.abort()
            raise
        self._base = manifest
        return self._meta

    @contextlib.contextmanager
    def _lookup(self) -> Iterator[MetadataReader | MetadataWriter]:
        """Metadata as staged so far (the current version's when nothing is staged)."""
        if self._meta is not None:
            yield self._meta
            return
        folder, _ = self._require_index()
        with MetadataReader(folder / META) as reader:
            yield reader

    # --- operations ---------------------------------------------------------------------------
    def create(
        self,
        items: EncodedItems,
        *,
        codes: Mapping[str, Any],
        model: Mapping[str, Any],
        files: Mapping[str, str | Path] | None = None,
        kind: str = "auto",
        float_kind: str | None = None,
        binary_kind: str | None = None,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        overwrite: bool = False,
    ) -> None:
        """Stage a whole new index (see :func:`create_index` for the arguments)."""
        self._require_open()
        if self._meta is not None:
            raise RuntimeError("create must be the first change of an IndexWriter")
        if self._parent is not None and not overwrite:
            raise FileExistsError(
                f"{self.index_dir} already holds an index; pass overwrite to replace it"
            )
        bits = check_bits(items.bits)
        kinds: dict[Family, str] = {
            "float": float_kind or kind,
            "binary": binary_kind or kind,
        }
        for family, name in kinds.items():
            if name != "auto":
                get_kind(family, name)  # unknown names fail before any work
        widths: dict[Family, int] = {"float": items.dim, "binary": bits}
        n_text = len(items.text_to_image)
        item_ids, text_ids = _id_block(0, len(items)), _id_block(0, n_text)
        self._vw = VersionWriter(self.index_dir, self._parent)
        try:
            self._collections = {
                "image": _new_rows(
                    item_ids, _item_rows(items, "image"), widths, kinds, params or {}
                ),
                "text": _new_rows(text_ids, _item_rows(items, "text"), widths, kinds, params or {}),
            }
            self._meta = MetadataWriter(self._vw.path(META), create=True)
            self._meta.insert(items.records, item_ids, text_ids, items.text_to_image)
            for name, src in (files or {}).items():
                self._vw.write(name, functools.partial(shutil.copyfile, src))
        except BaseException:
            self.abort()
            raise
        self._fresh = True
        self._base = IndexManifest(
            version=0,
            dim=items.dim,
            bits=bits,
            collections={},
            next_ids={"item": len(items), "text": n_text},
            codes=dict(codes),
            model=dict(model),
        )

    def append(
        self,
        items: EncodedItems,
        *,
        on_exists: OnExists = "error",
        expect_model: Mapping[str, Any] | None = None,
    ) -> None:
        """Stage adding items (see :func:`append_items`)."""
        if on_exists not in ("error", "skip", "replace"):
            raise ValueError(f"on_exists must be error, skip or replace; got {on_exists!r}")
        _, manifest = self._require_index()
        if expect_model is not None and dict(expect_model) != manifest.model:
            raise ValueError(
                f"{self.index_dir} was rebuilt with another model while the items were "
                "encoded; add them again"
            )
        if items.dim != manifest.dim or items.bits != manifest.bits:
            raise ValueError(
                f"items have {items.dim}-d vectors and {items.bits}-bit codes; the index holds "
                f"{manifest.dim}-d and {manifest.bits}-bit (encode them with the index's model)"
            )
        with self._lookup() as meta:
            existing = meta.ids_of_keys([r.id for r in items.records])
        if existing and on_exists == "error":
            some = ", ".join(sorted(existing)[:5])
            raise ValueError(
                f"{len(existing)} item id(s) are already in the index (e.g. {some}); "
                "pass on_exists='skip' or 'replace'"
            )
        if existing and on_exists == "skip":
            items = items.select(
                np.asarray([i for i, r in enumerate(items.records) if r.id not in existing])
            )
        if len(items) == 0 and not (existing and on_exists == "replace"):
            return
        staged = self._stage()
        base = self._base
        assert base is not None
        if existing and on_exists == "replace":
            self._drop(staged, np.asarray(sorted(existing.values()), dtype=np.int64))
        item_ids = _id_block(base.next_ids["item"], len(items))
        text_ids = _id_block(base.next_ids["text"], len(items.text_to_image))
        self._collections["image"].append(item_ids, _item_rows(items, "image"))
        self._collections["text"].append(text_ids, _item_rows(items, "text"))
        staged.insert(items.records, item_ids, text_ids, items.text_to_image)
        self._base = replace(
            base,
            next_ids={
                "item": base.next_ids["item"] + len(items),
                "text": base.next_ids["text"] + len(items.text_to_image),
            },
        )

    def delete(self, keys: Sequence[str], *, missing_ok: bool = False) -> int:
        """Stage removing items (their image row and caption rows) by id; returns how many.

        Raises:
            ValueError: an id is not in the index (unless ``missing_ok``).
        """
        keys = list(dict.fromkeys(keys))
        self._require_index()
        with self._lookup() as meta:
            found = meta.ids_of_keys(keys)
        absent = [k for k in keys if k not in found]
        if absent and not missing_ok:
            raise ValueError(
                f"{len(absent)} id(s) not in the index: {', '.join(repr(k) for k in absent[:5])}"
            )
        if found:
            self._drop(self._stage(), np.asarray(sorted(found.values()), dtype=np.int64))
        return len(found)

    def _drop(self, meta: MetadataWriter, item_ids: np.ndarray) -> None:
        text_ids = np.asarray(
            [t.id for t in meta.texts_of_items(item_ids.tolist())], dtype=np.int64
        )
        self._collections["image"].drop(item_ids)
        self._collections["text"].drop(text_ids)
        meta.delete(item_ids.tolist())

    # --- publishing ---------------------------------------------------------------------------
    def commit(self) -> IndexManifest:
        """Publish the staged changes as the next version (called by a clean ``with`` exit);
        with nothing staged, returns the current manifest. On failure, aborts and re-raises."""
        if self._meta is None or self._vw is None or self._base is None:
            return self.manifest
        vw, meta, base = self._vw, self._meta, self._base
        try:
            meta.close()
            vw.finish_file(META)
            infos: dict[str, CollectionInfo] = {}
            for name, rows in self._collections.items():
                if rows.changed or self._fresh:
                    infos[name] = _write_rows(vw, name, rows)
                else:
                    infos[name] = base.collections[name]
            if not self._fresh and self._folder is not None:
                for name, info in base.files.items():
                    if name not in vw.files:
                        vw.link(self._folder, name, info)
            manifest = replace(base, collections=infos, files={})
            self._manifest = vw.commit(manifest)
        except BaseException as e:
            self._abort_after(e)
            raise
        self._meta = self._vw = None
        return self._manifest

    def _abort_after(self, error: BaseException) -> None:
        """:meth:`abort` after ``error``; a full disk is then raised as a
        :class:`~xmodal.io.StorageFullError` naming the index, the free and the needed space."""
        if isinstance(error, StorageFullError) or not storage_full(error):
            self.abort()
            return
        needed = self._space_needed()
        self.abort()
        raise StorageFullError(
            self.index_dir, needed, "the previous version is untouched"
        ) from error

    def _space_needed(self) -> int:
        """About what a new version takes: the bytes staged before the disk filled (hard links
        aside), or the current version's size when that is more."""

        def size(folder: Path | None, new_only: bool) -> int:
            total = 0
            for p in folder.rglob("*") if folder is not None and folder.is_dir() else ():
                with contextlib.suppress(OSError):
                    st = p.lstat()
                    if p.is_file() and not (new_only and st.st_nlink > 1):
                        total += st.st_size
            return total

        staged = size(self._vw.tmp if self._vw is not None else None, new_only=True)
        return max(staged, size(self._folder, new_only=False))

    def abort(self) -> None:
        """Drop the staged changes and their temporary folder (the current version stays)."""
        meta, vw = self._meta, self._vw
        self._meta = self._vw = None
        self._base, self._collections, self._fresh = None, {}, False
        try:
            if meta is not None:
                meta.close()
        finally:
            if vw is not None:
                vw.abort()


def create_index(
    index_dir: str | Path,
    items: EncodedItems,
    *,
    codes: Mapping[str, Any],
    model: Mapping[str, Any],
    files: Mapping[str, str | Path] | None = None,
    kind: str = "auto",
    float_kind: str | None = None,
    binary_kind: str | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    overwrite: bool = False,
) -> IndexManifest:
    """Write a new index (or, with ``overwrite``, a new version replacing an existing one).

    Args:
        index_dir: Folder of the index.
        items: The encoded items.
        codes: How the codes were made (stored in the manifest, e.g. ``{"source": "itq"}``).
        model: How to encode queries and new items (``{"kind": "none"}`` for arrays only).
        files: Extra files to carry in every version, ``{relative name: source path}`` (the
            code rotation, the run's checkpoint).
        kind: ``auto`` or a registered kind name (:func:`~xmodal.index.kinds.kind_names`) for
            both float and binary indexes.
        float_kind: Overrides ``kind`` for the float indexes.
        binary_kind: Overrides ``kind`` for the binary indexes.
        params: Index parameter overrides, ``{"float": {...}, "binary": {...}}`` (see each
            kind's :meth:`~xmodal.index.kinds.IndexKind.default_params`).
        overwrite: Replace an existing index (atomically, as a new version).

    Raises:
        FileExistsError: the folder holds an index and ``overwrite`` is false.
        ValueError: bad kinds, code length or items.
    """
    with IndexWriter(index_dir) as w:
        w.create(
            items,
            codes=codes,
            model=model,
            files=files,
            kind=kind,
            float_kind=float_kind,
            binary_kind=binary_kind,
            params=params,
            overwrite=overwrite,
        )
    return w.manifest


def append_items(
    index_dir: str | Path,
    items: EncodedItems,
    *,
    on_exists: OnExists = "error",
    expect_model: Mapping[str, Any] | None = None,
) -> IndexManifest:
    """Add items to an index as a new version.

    Args:
        index_dir: The index folder.
        items: Encoded with the index's own model (same dimension and code length).
        on_exists: What to do with items whose id is already in the index: ``error`` (raise,
            naming them), ``skip`` (keep the indexed ones) or ``replace`` (re-index them).
        expect_model: The index's model spec the items were encoded with (an index rebuilt
            with another model meanwhile is an error).

    Raises:
        ValueError: dimension or code length differ from the index's, or ids exist with
            ``on_exists="error"``.
    """
    with IndexWriter(index_dir) as w:
        w.append(items, on_exists=on_exists, expect_model=expect_model)
    return w.manifest


def delete_items(
    index_dir: str | Path, keys: Sequence[str], *, missing_ok: bool = False
) -> IndexManifest:
    """Remove items (their image row and caption rows) by id, as a new version.

    Raises:
        ValueError: an id is not in the index (unless ``missing_ok``).
    """
    with IndexWriter(index_dir) as w:
        w.delete(keys, missing_ok=missing_ok)
    return w.manifest

"""Create an index from encoded items, add items to it, remove items from it.

Each operation runs under the index's writer lock and publishes a complete new version
(:mod:`xmodal.index.versions`): searches running meanwhile keep their snapshot and never see a
half-written state. Collections an operation leaves unchanged are hard-linked, not rewritten.
Cost: adding or removing rewrites the changed collections' files (``O(rows)`` I/O); FAISS work is
incremental (new rows are encoded and inserted; trained IVF quantizers and HNSW graphs are kept)
except that removing rows from an HNSW graph rebuilds it.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xmodal.index.items import EncodedItems, check_bits
from xmodal.index.kinds import (
    KINDS,
    add_rows,
    choose_kind,
    default_params,
    new_index,
    read_faiss,
    remove_rows,
    stored_rows,
    write_faiss,
)
from xmodal.index.manifest import (
    VERSIONS,
    CollectionInfo,
    IndexFormatError,
    Manifest,
    read_manifest,
)
from xmodal.index.metadata import MetadataReader, MetadataWriter
from xmodal.index.snapshot import COLLECTIONS, META, collection_file
from xmodal.index.versions import VersionWriter, current_pointer, writer_lock

__all__ = ["OnExists", "append_items", "create_index", "delete_items"]

OnExists = Literal["error", "skip", "replace"]


@dataclass
class _Rows:
    """A collection being written: stable ids, FAISS indexes, exact rows for IVF kinds."""

    info: CollectionInfo
    ids: np.ndarray
    float_index: Any
    binary_index: Any
    raw_vectors: np.ndarray | None  # kept only beside IVF-PQ
    raw_codes: np.ndarray | None  # kept only beside binary IVF
    changed: bool = True

    def exact_vectors(self) -> np.ndarray:
        rows = stored_rows(self.float_index, "float")
        return self.raw_vectors if rows is None else rows  # type: ignore[return-value]

    def exact_codes(self) -> np.ndarray:
        rows = stored_rows(self.binary_index, "binary")
        return self.raw_codes if rows is None else rows  # type: ignore[return-value]

    def append(self, ids: np.ndarray, vectors: np.ndarray, codes: np.ndarray) -> None:
        if len(ids) == 0:
            return
        add_rows(self.float_index, self.info.float_kind, vectors)
        add_rows(self.binary_index, self.info.binary_kind, codes)
        self.ids = np.concatenate([self.ids, ids.astype(np.int64)])
        if self.raw_vectors is not None:
            self.raw_vectors = np.concatenate([self.raw_vectors, vectors])
        if self.raw_codes is not None:
            self.raw_codes = np.concatenate([self.raw_codes, codes])
        self.info = replace(self.info, count=len(self.ids))
        self.changed = True

    def drop(self, stable_ids: np.ndarray) -> None:
        if len(self.ids) == 0 or len(stable_ids) == 0:
            return
        keep = np.flatnonzero(~np.isin(self.ids, stable_ids))
        if len(keep) == len(self.ids):
            return
        params = self.info.params
        self.float_index = remove_rows(
            self.float_index,
            self.info.float_kind,
            "float",
            keep,
            self.exact_vectors(),
            params.get("float", {}),
        )
        self.binary_index = remove_rows(
            self.binary_index,
            self.info.binary_kind,
            "binary",
            keep,
            self.exact_codes(),
            params.get("binary", {}),
        )
        self.ids = self.ids[keep]
        if self.raw_vectors is not None:
            self.raw_vectors = self.raw_vectors[keep]
        if self.raw_codes is not None:
            self.raw_codes = self.raw_codes[keep]
        self.info = replace(self.info, count=len(self.ids))
        self.changed = True


def _new_rows(
    ids: np.ndarray,
    vectors: np.ndarray,
    codes: np.ndarray,
    bits: int,
    float_kind: str,
    binary_kind: str,
    params: Mapping[str, Mapping[str, Any]],
) -> _Rows:
    n, d = vectors.shape
    kinds = {
        "float": "flat" if n == 0 else choose_kind(float_kind, "float", n),
        "binary": "flat" if n == 0 else choose_kind(binary_kind, "binary", n),
    }
    width = {"float": d, "binary": bits}
    data = {
        "float": np.ascontiguousarray(vectors, dtype=np.float32),
        "binary": np.ascontiguousarray(codes),
    }
    all_params: dict[str, dict[str, Any]] = {}
    indexes = {}
    for family in ("float", "binary"):
        p = default_params(kinds[family], family, n, width[family])  # type: ignore[arg-type]
        p.update(params.get(family, {}))
        all_params[family] = p
        indexes[family] = new_index(kinds[family], family, width[family], p, data[family])  # type: ignore[arg-type]
    info = CollectionInfo(0, kinds["float"], kinds["binary"], all_params)
    rows = _Rows(
        info,
        np.zeros(0, dtype=np.int64),
        indexes["float"],
        indexes["binary"],
        np.zeros((0, d), dtype=np.float32) if kinds["float"] == "ivf" else None,
        np.zeros((0, bits // 8), dtype=np.uint8) if kinds["binary"] == "ivf" else None,
    )
    rows.append(ids, data["float"], data["binary"])
    return rows


def _load_rows(folder: Path, name: str, info: CollectionInfo) -> _Rows:
    """A committed collection read into memory, ready to modify."""
    ids = np.load(folder / collection_file(name, "ids.npy"))
    fidx = read_faiss(
        folder / collection_file(name, "float.faiss"), "float", info.float_kind, mmap=False
    )
    bidx = read_faiss(
        folder / collection_file(name, "binary.faiss"), "binary", info.binary_kind, mmap=False
    )
    vec = (
        np.load(folder / collection_file(name, "vectors.npy")) if info.float_kind == "ivf" else None
    )
    codes = (
        np.load(folder / collection_file(name, "codes.npy")) if info.binary_kind == "ivf" else None
    )
    return _Rows(info, ids, fidx, bidx, vec, codes, changed=False)


def _write_rows(vw: VersionWriter, name: str, rows: _Rows) -> CollectionInfo:
    parts: list[tuple[str, Any]] = [("ids.npy", lambda p: np.save(p, rows.ids.astype(np.int64)))]
    parts.append(("float.faiss", lambda p: write_faiss(rows.float_index, p, "float")))
    parts.append(("binary.faiss", lambda p: write_faiss(rows.binary_index, p, "binary")))
    raw = []
    if rows.raw_vectors is not None:
        parts.append(("vectors.npy", lambda p: np.save(p, np.ascontiguousarray(rows.raw_vectors))))
        raw.append("vectors")
    if rows.raw_codes is not None:
        parts.append(("codes.npy", lambda p: np.save(p, np.ascontiguousarray(rows.raw_codes))))
        raw.append("codes")
    for part, write in parts:
        fname = collection_file(name, part)
        write(vw.path(fname))
        vw.finish_file(fname)
    return replace(rows.info, count=len(rows.ids), raw=raw)


def _id_block(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int64)


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
) -> Manifest:
    """Write a new index (or, with ``overwrite``, a new version replacing an existing one).

    Args:
        index_dir: Folder of the index.
        items: The encoded items.
        codes: How the codes were made (stored in the manifest, e.g. ``{"source": "itq"}``).
        model: How to encode queries and new items (``{"kind": "none"}`` for arrays only).
        files: Extra files to carry in every version, ``{relative name: source path}`` (the
            code rotation, the run's checkpoint).
        kind: ``auto``, ``flat``, ``hnsw`` or ``ivf`` for both float and binary indexes.
        float_kind: Overrides ``kind`` for the float indexes.
        binary_kind: Overrides ``kind`` for the binary indexes.
        params: Index parameter overrides, ``{"float": {...}, "binary": {...}}`` (see
            :func:`~xmodal.index.kinds.default_params`).
        overwrite: Replace an existing index (atomically, as a new version).

    Raises:
        FileExistsError: the folder holds an index and ``overwrite`` is false.
        ValueError: bad kinds, code length or items.
    """
    index_dir = Path(index_dir)
    bits = check_bits(items.bits)
    params = params or {}
    fk, bk = float_kind or kind, binary_kind or kind
    for k in (fk, bk):
        if k not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {k!r}")
    with writer_lock(index_dir):
        parent = current_pointer(index_dir)
        if parent is not None and not overwrite:
            raise FileExistsError(
                f"{index_dir} already holds an index; pass overwrite to replace it"
            )
        n_text = len(items.text_owner)
        item_ids = _id_block(0, len(items))
        text_ids = _id_block(0, n_text)
        collections = {
            "image": _new_rows(
                item_ids, items.image_vectors, items.image_codes, bits, fk, bk, params
            ),
            "text": _new_rows(text_ids, items.text_vectors, items.text_codes, bits, fk, bk, params),
        }
        vw = VersionWriter(index_dir, parent)
        try:
            infos = {name: _write_rows(vw, name, rows) for name, rows in collections.items()}
            meta = MetadataWriter(vw.path(META), create=True)
            try:
                meta.insert(items.records, item_ids, text_ids, items.text_owner)
            finally:
                meta.close()
            vw.finish_file(META)
            for name, src in (files or {}).items():
                dst = vw.path(name)
                shutil.copyfile(src, dst)
                vw.finish_file(name)
            manifest = Manifest(
                version=0,
                dim=items.dim,
                bits=bits,
                collections=infos,
                next_ids={"item": len(items), "text": n_text},
                codes=dict(codes),
                model=dict(model),
            )
            return vw.commit(manifest)
        except BaseException:
            vw.abort()
            raise


def _open_parent(index_dir: Path) -> tuple[Any, Path, Manifest]:
    parent = current_pointer(index_dir)
    if parent is None:
        raise IndexFormatError(index_dir, "not an xmodal index (no CURRENT file)")
    folder = index_dir / VERSIONS / parent.dir
    return parent, folder, read_manifest(folder, parent.manifest_sha256)


def _finish(
    vw: VersionWriter,
    parent_folder: Path,
    parent_manifest: Manifest,
    collections: dict[str, _Rows],
    meta_change: Any,
    next_ids: dict[str, int],
) -> Manifest:
    infos: dict[str, CollectionInfo] = {}
    for name, rows in collections.items():
        if rows.changed:
            infos[name] = _write_rows(vw, name, rows)
        else:
            infos[name] = parent_manifest.collections[name]
    shutil.copyfile(parent_folder / META, vw.path(META))
    meta = MetadataWriter(vw.path(META), create=False)
    try:
        meta_change(meta)
    finally:
        meta.close()
    vw.finish_file(META)
    for name, info in parent_manifest.files.items():
        if name not in vw.files:
            vw.link(parent_folder, name, info)
    manifest = replace(parent_manifest, collections=infos, next_ids=next_ids, files={})
    return vw.commit(manifest)


def append_items(
    index_dir: str | Path,
    items: EncodedItems,
    *,
    on_exists: OnExists = "error",
    expect_model: Mapping[str, Any] | None = None,
) -> Manifest:
    """Add items to an index as a new version.

    Args:
        index_dir: The index folder.
        items: Encoded with the index's own model (same dimension and code length).
        on_exists: What to do with items whose id is already in the index: ``error`` (raise,
            naming them), ``skip`` (keep the indexed ones) or ``replace`` (re-index them).

    Raises:
        ValueError: dimension or code length differ from the index's, or ids exist with
            ``on_exists="error"``.
    """
    index_dir = Path(index_dir)
    if on_exists not in ("error", "skip", "replace"):
        raise ValueError(f"on_exists must be error, skip or replace; got {on_exists!r}")
    with writer_lock(index_dir):
        parent, folder, manifest = _open_parent(index_dir)
        if expect_model is not None and dict(expect_model) != manifest.model:
            raise ValueError(
                f"{index_dir} was rebuilt with another model while the items were encoded; "
                "add them again"
            )
        if items.dim != manifest.dim or items.bits != manifest.bits:
            raise ValueError(
                f"items have {items.dim}-d vectors and {items.bits}-bit codes; the index holds "
                f"{manifest.dim}-d and {manifest.bits}-bit (encode them with the index's model)"
            )
        reader = MetadataReader(folder / META)
        try:
            existing = reader.ids_of_keys([r.id for r in items.records])
        finally:
            reader.close()
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
        collections = {
            name: _load_rows(folder, name, manifest.collections[name]) for name in COLLECTIONS
        }
        replaced = (
            np.asarray(sorted(existing.values()), dtype=np.int64)
            if on_exists == "replace"
            else np.zeros(0, np.int64)
        )

        vw = VersionWriter(index_dir, parent)
        try:
            replaced_texts: list[int] = []
            if len(replaced):
                reader = MetadataReader(folder / META)
                try:
                    replaced_texts = [t.id for t in reader.texts_of_items(replaced)]
                finally:
                    reader.close()
                collections["image"].drop(replaced)
                collections["text"].drop(np.asarray(replaced_texts, dtype=np.int64))
            item_ids = _id_block(manifest.next_ids["item"], len(items))
            text_ids = _id_block(manifest.next_ids["text"], len(items.text_owner))
            collections["image"].append(item_ids, items.image_vectors, items.image_codes)
            collections["text"].append(text_ids, items.text_vectors, items.text_codes)

            def change(meta: MetadataWriter) -> None:
                if len(replaced):
                    meta.delete(replaced.tolist())
                meta.insert(items.records, item_ids, text_ids, items.text_owner)

            next_ids = {
                "item": manifest.next_ids["item"] + len(items),
                "text": manifest.next_ids["text"] + len(items.text_owner),
            }
            return _finish(vw, folder, manifest, collections, change, next_ids)
        except BaseException:
            vw.abort()
            raise


def delete_items(
    index_dir: str | Path, keys: Sequence[str], *, missing_ok: bool = False
) -> Manifest:
    """Remove items (their image row and caption rows) by id, as a new version.

    Raises:
        ValueError: an id is not in the index (unless ``missing_ok``).
    """
    index_dir = Path(index_dir)
    keys = list(dict.fromkeys(keys))
    with writer_lock(index_dir):
        parent, folder, manifest = _open_parent(index_dir)
        reader = MetadataReader(folder / META)
        try:
            found = reader.ids_of_keys(keys)
            item_ids = np.asarray(sorted(found.values()), dtype=np.int64)
            text_ids = np.asarray([t.id for t in reader.texts_of_items(item_ids)], dtype=np.int64)
        finally:
            reader.close()
        absent = [k for k in keys if k not in found]
        if absent and not missing_ok:
            raise ValueError(
                f"{len(absent)} id(s) not in the index: {', '.join(repr(k) for k in absent[:5])}"
            )
        if not found:
            return manifest
        collections = {
            name: _load_rows(folder, name, manifest.collections[name]) for name in COLLECTIONS
        }
        vw = VersionWriter(index_dir, parent)
        try:
            collections["image"].drop(item_ids)
            collections["text"].drop(text_ids)
            return _finish(
                vw,
                folder,
                manifest,
                collections,
                lambda m: m.delete(item_ids.tolist()),
                dict(manifest.next_ids),
            )
        except BaseException:
            vw.abort()
            raise

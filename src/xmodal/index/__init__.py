"""Persistent, updatable search indexes over embeddings and binary codes (FAISS + SQLite).

::

    from xmodal.index import build_index, add_to_index, remove_from_index

    build_index("runs/emoji", "data/openmoji", "indexes/emoji", bits=64, kind="auto")
    add_to_index("indexes/emoji", "data/new-emoji")
    remove_from_index("indexes/emoji", ["images/1F600.png"])

Search it with :class:`xmodal.search.Searcher`. Pieces:

* :mod:`~xmodal.index.export` — embeddings and codes from any run (hash head, ITQ or random).
* :mod:`~xmodal.index.embedders` — how an index encodes queries and new items (run or dual encoder).
* :mod:`~xmodal.index.kinds` — FAISS index kinds and the ``auto`` rule.
* :mod:`~xmodal.index.writer` — create / append / delete as atomic new versions (arrays in).
* :mod:`~xmodal.index.snapshot` — open a committed version read-only, memory-mapped, verified.
* :mod:`~xmodal.index.manifest`, :mod:`~xmodal.index.versions`, :mod:`~xmodal.index.metadata` —
  the on-disk format: manifest with checksums, copy-on-write versions, SQLite metadata.

Importing this package does not import torch; the model-backed functions load it when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xmodal.index.coding import build_index_from_vectors
from xmodal.index.items import EncodedItems, check_bits
from xmodal.index.kinds import IndexKind, choose_kind, get_kind, kind_names, register_kind
from xmodal.index.manifest import IndexFormatError, IndexManifest, is_index_dir
from xmodal.index.snapshot import Snapshot
from xmodal.index.writer import IndexWriter, append_items, create_index, delete_items

if TYPE_CHECKING:
    from xmodal.index.build import add_to_index, build_index, remove_from_index
    from xmodal.index.export import Export, export_run

__all__ = [
    "EncodedItems",
    "Export",
    "IndexFormatError",
    "IndexKind",
    "IndexManifest",
    "IndexWriter",
    "Snapshot",
    "add_to_index",
    "append_items",
    "build_index",
    "build_index_from_vectors",
    "check_bits",
    "choose_kind",
    "create_index",
    "delete_items",
    "export_run",
    "get_kind",
    "is_index_dir",
    "kind_names",
    "register_kind",
    "remove_from_index",
]

_LAZY = {
    "add_to_index": "xmodal.index.build",
    "build_index": "xmodal.index.build",
    "remove_from_index": "xmodal.index.build",
    "Export": "xmodal.index.export",
    "export_run": "xmodal.index.export",
}


#: Old names that keep working behind a DeprecationWarning.
_RENAMED = {"Manifest": "IndexManifest"}


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        import warnings

        warnings.warn(
            f"xmodal.index.{name} is now xmodal.index.{_RENAMED[name]}",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[_RENAMED[name]]
    # model-backed functions import torch: load them on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xmodal.index' has no attribute {name!r}")

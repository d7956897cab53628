"""Persistent, updatable search indexes over embeddings and binary codes (FAISS + SQLite).

::

    from xmodal.index import build_index, add_to_index, remove_from_index

    build_index("runs/emoji", "data/openmoji", "indexes/emoji", bits=64, kind="auto")
    add_to_index("indexes/emoji", "data/new-emoji")
    remove_from_index("indexes/emoji", ["images/1F600.png"])

Search it with :class:`xmodal.search.Searcher`. Pieces:

* :mod:`~xmodal.index.export` — embeddings and codes from any run (hash head, ITQ or random).
* :mod:`~xmodal.index.models` — how an index encodes queries and new items (run or dual encoder).
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
from xmodal.index.kinds import KINDS, choose_kind
from xmodal.index.manifest import IndexFormatError, Manifest, is_index_dir
from xmodal.index.snapshot import Snapshot
from xmodal.index.writer import append_items, create_index, delete_items

if TYPE_CHECKING:
    from xmodal.index.build import add_to_index, build_index, remove_from_index
    from xmodal.index.export import Export, export_run

__all__ = [
    "KINDS",
    "EncodedItems",
    "Export",
    "IndexFormatError",
    "Manifest",
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
    "is_index_dir",
    "remove_from_index",
]

_LAZY = {
    "add_to_index": "xmodal.index.build",
    "build_index": "xmodal.index.build",
    "remove_from_index": "xmodal.index.build",
    "Export": "xmodal.index.export",
    "export_run": "xmodal.index.export",
}


def __getattr__(name: str) -> Any:
    # model-backed functions import torch: load them on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xmodal.index' has no attribute {name!r}")

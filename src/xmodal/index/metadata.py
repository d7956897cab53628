"""Item metadata in SQLite (stdlib ``sqlite3``): ids, source paths, captions, labels.

Schema::

    items(id INTEGER PRIMARY KEY, key TEXT UNIQUE, path TEXT, captions TEXT, labels TEXT, extra TEXT)
    texts(id INTEGER PRIMARY KEY, item INTEGER, position INTEGER, caption TEXT)
    labels(label TEXT, item INTEGER, PRIMARY KEY (label, item))

``items.id`` is the stable int64 id of an item and of its image row; ``texts.id`` that of a
caption row. ``key`` is the item's string id (the record id). ``captions``, ``labels`` and
``extra`` are JSON. Each index version has its own copy of the database (copy-on-write), which
readers open read-only and immutable: no locks, no journal, no half-written rows.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.datasets.record import Record
from xmodal.index.closing import Closing

__all__ = ["ItemMeta", "MetadataReader", "MetadataWriter", "TextMeta"]

_SCHEMA = """
CREATE TABLE items (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, path TEXT,
                    captions TEXT NOT NULL, labels TEXT NOT NULL, extra TEXT NOT NULL);
CREATE TABLE texts (id INTEGER PRIMARY KEY, item INTEGER NOT NULL, position INTEGER NOT NULL,
                    caption TEXT NOT NULL);
CREATE INDEX texts_item ON texts(item);
CREATE TABLE labels (label TEXT NOT NULL, item INTEGER NOT NULL, PRIMARY KEY (label, item))
    WITHOUT ROWID;
"""

#: Ids per ``IN (...)`` query.
_CHUNK = 500


@dataclass(frozen=True)
class ItemMeta:
    """What the index knows of one item besides its vectors."""

    id: int
    key: str
    path: str | None
    captions: tuple[str, ...]
    labels: tuple[str, ...]
    extra: dict[str, Any]


@dataclass(frozen=True)
class TextMeta:
    """One caption row: its id, its item and its text."""

    id: int
    item: int
    position: int
    caption: str


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield [int(x) for x in ids[i : i + _CHUNK]]


def _path_of(record: Record) -> str | None:
    if record.image is None:
        return None
    return str(Path(record.image).resolve())


class _Queries:
    """The read queries, over whatever connection a subclass holds (:meth:`_query`)."""

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def count(self, table: str) -> int:
        """Rows of ``items`` or ``texts``."""
        if table not in ("items", "texts"):
            raise ValueError(f"table must be 'items' or 'texts', got {table!r}")
        return int(self._query(f"SELECT count(*) FROM {table}")[0][0])

    def items(self, ids: Sequence[int]) -> dict[int, ItemMeta]:
        """Metadata of the items with these ids (missing ids are left out)."""
        out: dict[int, ItemMeta] = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            for iid, key, path, caps, labs, extra in self._query(
                f"SELECT id, key, path, captions, labels, extra FROM items WHERE id IN ({marks})",
                chunk,
            ):
                out[iid] = ItemMeta(
                    iid,
                    key,
                    path,
                    tuple(json.loads(caps)),
                    tuple(json.loads(labs)),
                    json.loads(extra),
                )
        return out

    def texts(self, ids: Sequence[int]) -> dict[int, TextMeta]:
        """Caption rows with these ids."""
        out: dict[int, TextMeta] = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            for tid, item, pos, caption in self._query(
                f"SELECT id, item, position, caption FROM texts WHERE id IN ({marks})", chunk
            ):
                out[tid] = TextMeta(tid, item, pos, caption)
        return out

    def texts_of_items(self, item_ids: Sequence[int]) -> list[TextMeta]:
        """Caption rows of these items, by item then position."""
        out: list[TextMeta] = []
        for chunk in _chunks(item_ids):
            marks = ",".join("?" * len(chunk))
            out.extend(
                TextMeta(*row)
                for row in self._query(
                    f"SELECT id, item, position, caption FROM texts WHERE item IN ({marks}) "
                    "ORDER BY item, position",
                    chunk,
                )
            )
        return out

    def keys(self) -> list[str]:
        """Every item id (key), by stable id."""
        return [r[0] for r in self._query("SELECT key FROM items ORDER BY id")]

    def has_path(self, path: str) -> bool:
        """Whether any item's image file is ``path`` (as stored: resolved)."""
        return bool(self._query("SELECT 1 FROM items WHERE path = ? LIMIT 1", (path,)))

    def ids_of_keys(self, keys: Sequence[str]) -> dict[str, int]:
        """``{key: item id}`` for the keys that exist."""
        out: dict[str, int] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = list(keys[i : i + _CHUNK])
            marks = ",".join("?" * len(chunk))
            out.update(
                dict(self._query(f"SELECT key, id FROM items WHERE key IN ({marks})", chunk))
            )
        return out

    def items_with_labels(self, labels: Sequence[str]) -> np.ndarray:
        """Sorted ids of the items that carry any of ``labels``."""
        marks = ",".join("?" * len(labels))
        rows = self._query(
            f"SELECT DISTINCT item FROM labels WHERE label IN ({marks})", list(labels)
        )
        return np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))

    def texts_with_labels(self, labels: Sequence[str]) -> np.ndarray:
        """Sorted ids of the caption rows whose item carries any of ``labels``."""
        marks = ",".join("?" * len(labels))
        rows = self._query(
            "SELECT texts.id FROM texts JOIN (SELECT DISTINCT item FROM labels WHERE label IN "
            f"({marks})) AS l ON texts.item = l.item",
            list(labels),
        )
        return np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))

    def label_names(self) -> list[str]:
        """Every label in the index, sorted."""
        return [r[0] for r in self._query("SELECT DISTINCT label FROM labels ORDER BY label")]


class MetadataReader(_Queries, Closing):
    """Read-only access to one committed version's database (thread-safe; a context manager
    that closes it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        uri = f"{self.path.resolve().as_uri()}?mode=ro&immutable=1"
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._lock = threading.Lock()

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


class MetadataWriter(_Queries, Closing):
    """Writes one version's database (a fresh one, or a copy of the previous version's), and
    reads what it holds so far; a context manager that closes it."""

    def __init__(self, path: str | Path, create: bool) -> None:
        self.path = Path(path)
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=DELETE")
        self.conn.execute("PRAGMA synchronous=FULL")
        if create:
            self.conn.executescript(_SCHEMA)

    def insert(
        self,
        records: Sequence[Record],
        item_ids: np.ndarray,
        text_ids: np.ndarray,
        text_to_image: np.ndarray,
    ) -> None:
        """Insert ``records`` with their stable ids, and one ``texts`` row per caption."""
        caption_rows: list[tuple[int, int, int, str]] = []
        j = 0
        for i, r in enumerate(records):
            for pos, caption in enumerate(r.captions):
                if text_to_image[j] != i:
                    raise ValueError("text rows are not in record order")
                caption_rows.append((int(text_ids[j]), int(item_ids[i]), pos, caption))
                j += 1
        cur = self.conn.cursor()
        cur.execute("BEGIN")
        try:
            cur.executemany(
                "INSERT INTO items (id, key, path, captions, labels, extra) VALUES (?,?,?,?,?,?)",
                (
                    (
                        int(item_ids[i]),
                        r.id,
                        _path_of(r),
                        json.dumps(list(r.captions), ensure_ascii=False),
                        json.dumps(list(r.labels), ensure_ascii=False),
                        json.dumps(r.extra, ensure_ascii=False, default=str),
                    )
                    for i, r in enumerate(records)
                ),
            )
            cur.executemany(
                "INSERT INTO texts (id, item, position, caption) VALUES (?,?,?,?)", caption_rows
            )
            cur.executemany(
                "INSERT OR IGNORE INTO labels (label, item) VALUES (?,?)",
                ((lab, int(item_ids[i])) for i, r in enumerate(records) for lab in r.labels),
            )
            cur.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def delete(self, item_ids: Sequence[int]) -> None:
        """Delete items, their captions and their labels."""
        cur = self.conn.cursor()
        cur.execute("BEGIN")
        try:
            for chunk in _chunks(item_ids):
                marks = ",".join("?" * len(chunk))
                for table, column in (("items", "id"), ("texts", "item"), ("labels", "item")):
                    cur.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", chunk)
            cur.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """Roll back after an error, keeping that error: SQLite has already rolled back on its
        own after some (a full disk), and "cannot rollback - no transaction is active" must not
        hide "database or disk is full"."""
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, args).fetchall()

    def close(self) -> None:
        """Close; the file is complete (no journal left) once this returns."""
        self.conn.close()

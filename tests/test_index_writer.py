"""IndexWriter is a context manager: one version per block, and an error leaves nothing behind."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from test_index_store import build, make_items, vectors_by_key

from xmodal.index import IndexFormatError, IndexWriter, Snapshot
from xmodal.index.manifest import read_pointer
from xmodal.index.metadata import MetadataReader
from xmodal.index.snapshot import META
from xmodal.index.versions import VersionWriter
from xmodal.search import Searcher


def listing(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (but the lock file) with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_one_block_is_one_version(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build(ix, make_items(10))
    before = read_pointer(ix).version
    with IndexWriter(ix) as w:
        w.append(make_items(3, start=10))
        assert w.delete(["r0", "r11"]) == 2  # sees the items appended in this block
        w.append(make_items(1, start=20))
        assert w.manifest.version == before  # nothing published yet
    assert w.manifest.version == read_pointer(ix).version == before + 1
    with Snapshot.open(ix) as snap:
        keys = set(vectors_by_key(snap))
        assert keys == {f"r{i}" for i in [*range(1, 10), 10, 12, 20]}
        assert len(snap.collections["text"]) == 2 * len(keys)
        assert snap.manifest.next_ids == {"item": 14, "text": 28}
    # nothing to change: no new version
    with IndexWriter(ix) as w:
        assert w.delete(["nope"], missing_ok=True) == 0
    assert read_pointer(ix).version == before + 1


@pytest.mark.parametrize("where", ["inside", "commit"])
def test_an_error_leaves_the_previous_version_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    ix = tmp_path / "ix"
    build(ix, make_items(12), kind="flat")
    pointer, files = read_pointer(ix), listing(ix)
    if where == "commit":  # the disk fills up while publishing

        def full(self: VersionWriter, manifest: object, keep_parent: bool = True) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(VersionWriter, "commit", full)
    with pytest.raises(RuntimeError if where == "inside" else OSError), IndexWriter(ix) as w:
        w.append(make_items(4, start=12))
        w.delete(["r1", "r2"])
        if where == "inside":
            raise RuntimeError("boom")
    monkeypatch.undo()
    assert read_pointer(ix) == pointer
    assert listing(ix) == files  # no temporary folder, no changed byte
    with Snapshot.open(ix, verify=True) as snap:
        assert set(vectors_by_key(snap)) == {f"r{i}" for i in range(12)}
    # the lock was released: the next writer goes through
    with IndexWriter(ix) as w:
        w.delete(["r1"])
    assert read_pointer(ix).version == pointer.version + 1


def test_a_failed_create_leaves_no_index(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    items = make_items(5)
    with pytest.raises(ValueError, match="float kind must be one of"), IndexWriter(ix) as w:
        w.create(items, codes={}, model={"kind": "none"}, float_kind="lsh")
    with pytest.raises(KeyError), IndexWriter(ix) as w:
        w.create(items, codes={}, model={"kind": "none"})
        raise KeyError("late")
    assert listing(ix) == {}
    with pytest.raises(IndexFormatError, match="no CURRENT"):
        Snapshot.open(ix)


def test_used_outside_a_with_block(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build(ix, make_items(3))
    w = IndexWriter(ix)
    with pytest.raises(RuntimeError, match="with block"):
        w.delete(["r0"])
    with (
        pytest.raises(IndexFormatError, match="not an xmodal index"),
        IndexWriter(tmp_path / "no") as w2,
    ):
        w2.append(make_items(1))
    assert np.array_equal(
        np.sort(list(vectors_by_key(Snapshot.open(ix)))), np.array(["r0", "r1", "r2"])
    )


def test_readers_close_when_their_block_ends(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build(ix, make_items(4))
    with Snapshot.open(ix) as snap, Searcher(ix) as searcher:
        assert snap.meta.count("items") == 4
        hits = searcher.search("image", vectors=snap.collections["image"].vectors[:1], k=2)
        assert hits.ids[0, 0] == snap.collections["image"].ids[0]
    for meta in (snap.meta, searcher.snapshot.meta):
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            meta.count("items")
    with MetadataReader(snap.folder / META) as reader:
        assert reader.keys() == ["r0", "r1", "r2", "r3"]
    with pytest.raises(sqlite3.ProgrammingError):
        reader.keys()

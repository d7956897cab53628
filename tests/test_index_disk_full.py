"""A full disk while an index changes: a clear error naming the path and the space (CLI), 507
(server), the previous version untouched, and SQLite's own words never masked.

Uses a small tmpfs (``mount -t tmpfs``, as root); skips where mounting is not allowed.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_toys import build_toy_index, png
from typer.testing import CliRunner

from xmodal.cli import app
from xmodal.index import Snapshot
from xmodal.index.metadata import MetadataWriter
from xmodal.io import StorageFullError, storage_full

runner = CliRunner()
SMALL_DISK_MAX = 4 << 20  # bytes: the 2 MiB tmpfs with room for rounding


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_index(tmp_path_factory.mktemp("full"))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        total = shutil.disk_usage(mnt).total
        if not 0 < total <= SMALL_DISK_MAX:  # a sandbox may accept the mount but not its size
            pytest.skip(f"the tmpfs reports {total} bytes, not the 2 MiB asked for")
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=30)


def _fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until at most ``leave`` bytes are free; skip the test where writing more
    than the disk's size leaves it with space (free space that does not fall)."""
    written = 0
    with open(disk / "filler", "ab") as f:
        while True:
            free = shutil.disk_usage(disk).free
            if free <= leave:
                return
            if written > SMALL_DISK_MAX:
                pytest.skip(f"wrote {written} bytes and the disk still reports {free} free")
            chunk = min(65536, free - leave)
            written += chunk
            try:
                f.write(b"\0" * chunk)
                f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
                return


def _new_data(root: Path) -> Path:
    data = root / "more"
    (data / "images").mkdir(parents=True)
    (data / "images" / "teal.png").write_bytes(png((20, 200, 200), (64, 64)))
    (data / "data.jsonl").write_text(
        '{"image": "images/teal.png", "captions": ["a teal square"]}\n', encoding="utf-8"
    )
    return data


def test_cli_add_and_remove_on_a_full_disk(toy: Path, small_disk: Path, tmp_path: Path) -> None:
    index = small_disk / "ix"
    shutil.copytree(toy, index)
    before = Snapshot.open(index)
    version, items = before.version, len(before.collections["image"])
    before.close()
    data = _new_data(tmp_path)
    _fill(small_disk, 0)
    for args in (
        ["index", "add", str(index), "--data", str(data), "--cache-dir", str(tmp_path / "c")],
        ["index", "remove", str(index), "images/red.png"],
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        assert "no space left on the device holding" in r.output and str(index) in r.output
        assert "free" in r.output and "needed" in r.output and "untouched" in r.output
        assert "Traceback" not in r.output and "cannot rollback" not in r.output
        after = Snapshot.open(index)  # the previous version, intact (checksums verified)
        assert (after.version, len(after.collections["image"])) == (version, items)
        after.close()
    assert not [p for p in (index / "versions").iterdir() if p.name.startswith(".tmp")]
    (small_disk / "filler").unlink()
    r = runner.invoke(app, ["index", "remove", str(index), "images/red.png"])
    assert r.exit_code == 0, r.output  # with space again, the same command works


@pytest.mark.parametrize("leave", [0, 8_192, 32_768, 131_072, 262_144])
def test_every_amount_of_space_gives_a_clean_answer(
    toy: Path, small_disk: Path, tmp_path: Path, leave: int
) -> None:
    """Whatever step the disk fills at (metadata copy, SQLite insert, FAISS files, manifest),
    the add either succeeds or fails as a full disk, and the index stays readable."""
    from xmodal.index import add_to_index

    index = small_disk / "ix"
    shutil.copytree(toy, index)
    _fill(small_disk, leave)
    try:
        add_to_index(index, _new_data(tmp_path), cache_dir=tmp_path / "c", progress=False)
    except StorageFullError as e:
        assert e.errno == errno.ENOSPC and e.needed and e.needed > 0
        assert "cannot rollback" not in repr(e.__cause__)
    snap = Snapshot.open(index)
    assert len(snap.collections["image"]) in (5, 6)
    snap.close()


def test_sqlite_disk_full_is_not_masked_by_the_rollback(tmp_path: Path) -> None:
    """SQLite rolls back by itself on a full disk; our ROLLBACK must not replace its error."""
    import numpy as np

    from xmodal.datasets import Record

    db = tmp_path / "meta.sqlite"
    writer = MetadataWriter(db, create=True)
    writer.conn.execute("PRAGMA max_page_count = 8")  # a database that cannot grow past 32 KB
    records = [Record(f"r{i}", None, (f"caption {i} " + "x" * 500,)) for i in range(200)]
    with pytest.raises(sqlite3.OperationalError, match="full") as e:
        writer.insert(records, np.arange(200), np.arange(200), np.arange(200))
    assert storage_full(e.value)
    writer.close()


def test_server_writes_on_a_full_disk_are_507(toy: Path, small_disk: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from serve_toys import TOKEN, auth

    from xmodal.serve import create_app

    index = small_disk / "ix"
    shutil.copytree(toy, index)
    _fill(small_disk, 0)
    with TestClient(create_app(index, token=TOKEN)) as c:
        r = c.post("/items", headers=auth(), data={"id": "teal.png"},
                   files={"file": ("t.png", png((20, 200, 200), (64, 64)), "image/png")})  # fmt: skip
        assert r.status_code == 507, r.text
        assert "no space left" in r.json()["detail"]
        r = c.delete("/items/images/red.png", headers=auth())
        assert r.status_code == 507, r.text
        assert c.get("/items/images/red.png").status_code == 200
    assert os.path.isfile(index / "CURRENT")

"""Writes are atomic: a crash or a kill at any point leaves a readable, correct index; searches
running during writes never fail and never see half-written state."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from xmodal.index import Snapshot, append_items, create_index, delete_items
from xmodal.index import versions as versions_module
from xmodal.index.manifest import VERSIONS
from xmodal.search import Searcher

# The writer subprocess and the tests build the same deterministic item sets from this code.
ITEMS_CODE = """
import numpy as np
from pathlib import Path
from xmodal.datasets.record import Record
from xmodal.evaluation import pack_codes
from xmodal.index import EncodedItems

DIM, BITS = 16, 32

def items(prefix, n, captions=1):
    rng = np.random.default_rng(list(prefix.encode()))
    recs = [Record(f"{prefix}{i}", Path(f"{prefix}{i}.png"),
                   tuple(f"{prefix}{i} caption {j}" for j in range(captions)), (prefix,))
            for i in range(n)]
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    codes = pack_codes(rng.integers(0, 2, (n, BITS)))
    return EncodedItems(recs, x, codes, np.repeat(x, captions, axis=0),
                        np.repeat(codes, captions, axis=0), np.repeat(np.arange(n), captions))
"""
namespace: dict = {}
exec(ITEMS_CODE, namespace)
items = namespace["items"]


def build(ix: Path, it, **kw) -> None:
    create_index(ix, it, codes={"source": "test"}, model={"kind": "none"}, **kw)


def content(snap: Snapshot) -> dict[str, np.ndarray]:
    """``{key: image vector}`` of a snapshot, checking captions and codes agree with metadata."""
    img = snap.collections["image"]
    meta = snap.meta.items(img.ids.tolist())
    assert len(meta) == len(img) == snap.meta.count("items")
    return {meta[i].key: np.asarray(img.vectors[p]) for p, i in enumerate(img.ids.tolist())}


def expected(*sets) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for it in sets:
        out.update({r.id: v for r, v in zip(it.records, it.image_vectors, strict=True)})
    return out


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# --- crashes injected at every step of a write --------------------------------------------------


class Crash(Exception):
    pass


def test_a_crash_at_any_step_leaves_the_previous_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ix = tmp_path / "ix"
    a, c = items("a", 40, captions=2), items("c", 10, captions=2)
    build(ix, a)
    old = expected(a)
    calls = {"n": 0, "fail_at": -1}
    real_fsync, real_rename, real_replace = versions_module._fsync_file, os.rename, os.replace

    def step(real):
        def wrapped(*args, **kw):
            calls["n"] += 1
            if calls["n"] == calls["fail_at"]:
                raise Crash(f"step {calls['n']}")
            return real(*args, **kw)

        return wrapped

    monkeypatch.setattr(versions_module, "_fsync_file", step(real_fsync))
    monkeypatch.setattr(versions_module.os, "rename", step(real_rename))
    monkeypatch.setattr(versions_module.os, "replace", step(real_replace))
    append_items(ix, c)  # a full write, to count its steps
    steps = calls["n"]
    delete_items(ix, [r.id for r in c.records])
    assert steps >= 9  # 7 files fsynced, the folder renamed, the pointer replaced
    for fail_at in range(1, steps + 1):
        calls.update(n=0, fail_at=fail_at)
        with pytest.raises(Crash):
            append_items(ix, c)
        snap = Snapshot.open(ix)  # verifies every checksum
        assert same(content(snap), old), f"crash at step {fail_at} changed the index"
    calls.update(n=0, fail_at=-1)
    append_items(ix, c)
    assert same(content(Snapshot.open(ix)), expected(a, c))
    assert not [p for p in (ix / VERSIONS).iterdir() if p.name.startswith(".tmp")]


# --- a writer process killed at random moments ------------------------------------------------

WRITER = (
    ITEMS_CODE
    + """
import sys
from xmodal.index import create_index, append_items, delete_items
ix = sys.argv[1]
A, B, C = items("a", 300), items("b", 200), items("c", 50)
def build(it):
    create_index(ix, it, codes={"source": "test"}, model={"kind": "none"}, overwrite=True, kind="hnsw")
ops = [lambda: append_items(ix, C, on_exists="replace"),
       lambda: delete_items(ix, [r.id for r in C.records], missing_ok=True),
       lambda: build(B), lambda: build(A)]
step = int(sys.argv[2])  # where in the cycle this writer starts
print("ready", flush=True)
while True:
    ops[step % 4]()
    step += 1
"""
)


@pytest.mark.slow
def test_killed_writer_leaves_a_readable_index(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    a, b, c = items("a", 300), items("b", 200), items("c", 50)
    build(ix, a, kind="hnsw")
    valid = [expected(a), expected(a, c), expected(b), expected(b, c)]
    rng = random.Random(0)
    seen: set[int] = set()
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for _trial in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(ix), str(_trial)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.6))
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]  # still writing
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        snap = Snapshot.open(ix)  # every checksum, count and dimension checked
        got = content(snap)
        matches = [i for i, v in enumerate(valid) if same(got, v)]
        assert matches, f"trial {_trial}: the index holds none of the written states"
        seen.add(matches[0])
        snap.close()
    assert len(seen) >= 2  # the kills landed in different phases of the write cycle


# --- concurrent searches during writes ----------------------------------------------------------


def test_searches_during_adds_never_fail_or_see_half_writes(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    base = items("a", 200)
    build(ix, base)
    batches = [items(f"n{j}-", 25) for j in range(12)]
    valid_counts = {200 + 25 * j for j in range(13)}
    searcher = Searcher(ix, verify=False)
    errors: list[BaseException] = []
    observed: list[int] = []
    done = threading.Event()
    q = base.image_vectors[:4]

    def reader() -> None:
        try:
            while not done.is_set():
                searcher.refresh()
                hits = searcher.search("image", vectors=q, k=300)
                n = len(hits.snapshot.collections["image"])
                assert n in valid_counts, n
                assert hits.ids.shape == (4, min(300, n)) and (hits.ids >= 0).all()
                results = hits.results()  # every id has its metadata in the same snapshot
                assert all(len(r) == min(300, n) for r in results)
                assert results[0][0].id == "a0"
                observed.append(n)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for batch in batches:
            append_items(ix, batch)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert len(set(observed)) >= 2  # readers saw the index grow
    searcher.refresh()
    assert len(searcher.snapshot.collections["image"]) == 500


READER = """
import sys
from xmodal.index import Snapshot
import numpy as np
ix, rounds = sys.argv[1], int(sys.argv[2])
for _ in range(rounds):
    snap = Snapshot.open(ix)
    img = snap.collections["image"]
    _, found = img.float_index.search(np.ascontiguousarray(img.vectors[:2]), 1)
    assert (found[:, 0] == [0, 1]).all()
    assert len(snap.meta.items(img.ids.tolist())) == len(img)
    print(len(img), flush=True)
    snap.close()
"""


def test_reader_process_during_adds(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build(ix, items("a", 100))
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", READER, str(ix), "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    for j in range(8):
        append_items(ix, items(f"p{j}-", 10))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    counts = [int(x) for x in out.split()]
    assert len(counts) == 60 and set(counts) <= {100 + 10 * j for j in range(9)}

"""PartialArray: chunk commits, resume after an abandoned run, identity checks, atomic finish."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xmodal.features import PartialArray, partial_paths

IDENTITY = {"encoder": "enc@1", "dataset_fingerprint": "abc"}


def blocks(rows: int, dim: int) -> np.ndarray:
    return np.arange(rows * dim, dtype=np.float32).reshape(rows, dim)


def test_commit_then_resume(tmp_path: Path) -> None:
    final = tmp_path / "f.npy"
    data = blocks(10, 3)
    first = PartialArray(final, rows=10, dim=3, identity=IDENTITY)
    assert first.resumed_from == 0
    first.write(data[:4])
    first.commit()
    first.write(data[4:6])  # written but never committed: a kill here loses these rows
    partial, progress = partial_paths(final)
    assert json.loads(progress.read_text())["rows_done"] == 4
    del first  # abandoned, as after SIGKILL

    second = PartialArray(final, rows=10, dim=3, identity=IDENTITY)
    assert second.resumed_from == 4 and second.done == 4
    second.write(data[4:])
    assert second.finish() == final
    np.testing.assert_array_equal(np.load(final), data)
    assert not partial.exists() and not progress.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npy"]


@pytest.mark.parametrize(
    ("rows", "dim", "identity"),
    [(10, 3, {**IDENTITY, "encoder": "enc@2"}), (11, 3, IDENTITY), (10, 4, IDENTITY)],
)
def test_mismatch_starts_over(tmp_path: Path, rows: int, dim: int, identity: dict) -> None:
    final = tmp_path / "f.npy"
    first = PartialArray(final, rows=10, dim=3, identity=IDENTITY)
    first.write(blocks(5, 3))
    first.commit()
    del first
    again = PartialArray(final, rows=rows, dim=dim, identity=identity)
    assert again.resumed_from == 0


def test_corrupt_progress_starts_over(tmp_path: Path) -> None:
    final = tmp_path / "f.npy"
    first = PartialArray(final, rows=4, dim=2, identity=IDENTITY)
    first.write(blocks(2, 2))
    first.commit()
    del first
    partial_paths(final)[1].write_text("{not json")
    assert PartialArray(final, rows=4, dim=2, identity=IDENTITY).resumed_from == 0


def test_write_checks(tmp_path: Path) -> None:
    arr = PartialArray(tmp_path / "f.npy", rows=3, dim=2, identity=IDENTITY)
    with pytest.raises(ValueError, match="does not fit"):
        arr.write(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="past the end"):
        arr.write(np.zeros((4, 2)))
    arr.write(np.ones((2, 2)))
    with pytest.raises(ValueError, match="2 of 3 rows"):
        arr.finish()


def test_zero_rows(tmp_path: Path) -> None:
    arr = PartialArray(tmp_path / "f.npy", rows=0, dim=5, identity=IDENTITY)
    assert np.load(arr.finish()).shape == (0, 5)

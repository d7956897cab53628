"""Split, split_sorted, split_random: determinism, references, JSON round trip, apply."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xmodal.datasets import (
    BadInputError,
    Dataset,
    Record,
    Split,
    split_random,
    split_sorted,
)


def _ds(n: int = 20) -> Dataset:
    # Ids deliberately out of order, features row i = i, to check rows follow records.
    ids = [f"img{i:03d}.jpg" for i in np.random.default_rng(5).permutation(n)]
    records = [Record(id=rid, image=None, captions=(rid,)) for rid in ids]
    feats = np.array([[int(r[3:6])] for r in ids], dtype=np.float32)
    return Dataset(name="toy", root=Path("."), records=records, image_features=feats)


def test_split_sorted_takes_consecutive_sorted_blocks() -> None:
    ds = _ds(20)
    s = split_sorted(ds, sizes=(10, 3, 5))
    ids = sorted(ds.ids)
    assert s.train == ids[:10] and s.val == ids[10:13] and s.test == ids[13:18]
    assert s.sizes == (10, 3, 5)
    assert split_sorted(ds.ids, sizes=(10, 3, 5)) == s
    with pytest.raises(ValueError, match="more than the 20 records"):
        split_sorted(ds, sizes=(10, 6, 5))
    with pytest.raises(ValueError, match="three integers"):
        split_sorted(ds, sizes=(10, 5))
    with pytest.raises(ValueError, match="non-negative"):
        split_sorted(ds, sizes=(10, -1, 5))
    with pytest.raises(ValueError, match="more than the 20"):
        split_sorted(ds)  # the default 700/100/200 protocol needs 1,000 records


def test_split_random_matches_reference_and_is_deterministic() -> None:
    ds = _ds(50)
    s = split_random(ds, seed=3)
    ids = sorted(ds.ids)
    perm = np.random.default_rng(3).permutation(50)
    shuffled = [ids[i] for i in perm]
    assert s.train == sorted(shuffled[:40])
    assert s.val == sorted(shuffled[40:45])
    assert s.test == sorted(shuffled[45:50])
    assert split_random(ds, seed=3) == s
    assert split_random(ds, seed=4) != s
    # Input order does not matter, only the ids.
    assert split_random(list(reversed(ds.ids)), seed=3) == s


def test_split_random_fractions_and_sizes() -> None:
    ds = _ds(21)
    assert split_random(ds, (0.8, 0.1, 0.1)).sizes == (17, 2, 2)  # val/test floor, train the rest
    assert split_random(ds, (0.5, 0.2, 0.1)).sizes == (10, 4, 2)  # not summing to 1: floors
    assert split_random(ds, sizes=(5, 5, 5), seed=1).sizes == (5, 5, 5)
    with pytest.raises(ValueError, match="not both"):
        split_random(ds, (0.8, 0.1, 0.1), sizes=(1, 1, 1))
    with pytest.raises(ValueError, match="more than 1"):
        split_random(ds, (0.8, 0.2, 0.1))
    with pytest.raises(ValueError, match="more than the 21"):
        split_random(ds, sizes=(20, 1, 1))


def test_split_rejects_overlap_and_duplicates() -> None:
    with pytest.raises(ValueError, match="'a' is in both train and test"):
        Split(train=["a", "b"], val=[], test=["a"])
    with pytest.raises(ValueError, match="unique"):
        split_sorted(["a", "a", "b"], sizes=(1, 1, 0))


def test_json_round_trip_and_bad_files(tmp_path: Path) -> None:
    s = split_random(_ds(30), seed=0)
    s.to_json(tmp_path / "split.json")
    assert Split.from_json(tmp_path / "split.json") == s
    assert set(json.loads((tmp_path / "split.json").read_text())) == {"train", "val", "test"}
    (tmp_path / "bad.json").write_text('{"train": [], "val": []}')
    with pytest.raises(BadInputError, match="'train', 'val' and 'test'"):
        Split.from_json(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text('{"train": ["a"], "val": ["a"], "test": []}')
    with pytest.raises(BadInputError, match="in both"):
        Split.from_json(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BadInputError, match="not valid JSON"):
        Split.from_json(tmp_path / "bad.json")


def test_apply_keeps_records_and_feature_rows_together() -> None:
    ds = _ds(20)
    s = split_sorted(ds, sizes=(12, 4, 4))
    train, val, test = s.apply(ds)
    assert sorted(train.ids) == s.train and sorted(val.ids) == s.val and sorted(test.ids) == s.test
    for part in (train, val, test):
        rows = [int(rid[3:6]) for rid in part.ids]
        np.testing.assert_array_equal(part.image_features[:, 0], rows)
    assert train.name == "toy-train"
    with pytest.raises(ValueError, match="not in dataset"):
        Split(train=["nope"], val=[], test=[]).apply(ds)

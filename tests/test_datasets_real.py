"""The shared real collections read correctly (skipped when ../shared/data is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xmodal.datasets import FLICKR8K_1K_SIZES, load_dataset, split_sorted

DATA = Path(__file__).parents[1].parent / "shared" / "data"
OPENMOJI = DATA / "openmoji"
FLICKR = DATA / "flickr8k-1k"


def _need(path: Path) -> None:
    if not (path / "data.jsonl").is_file():
        pytest.skip(f"real data not found at {path} (expected ../shared/data next to the repo)")


def test_openmoji() -> None:
    _need(OPENMOJI)
    ds = load_dataset(OPENMOJI)
    assert ds.name == "openmoji" and ds.skipped == []
    assert len(ds) == 2464
    assert ds.ids == sorted(ds.ids) and len(set(ds.ids)) == 2464
    assert all(r.id.startswith("images/") and r.image.is_file() for r in ds.records[:20])
    groups = {r.labels[0] for r in ds.records}
    subgroups = {r.labels[1] for r in ds.records}
    assert (len(groups), len(subgroups)) == (12, 119)
    assert all(len(r.labels) == 2 for r in ds.records)
    assert sum(len(r.captions) == 1 for r in ds.records) == 120  # items without tags
    grin = next(r for r in ds.records if r.id == "images/1F600.png")
    assert grin.captions[0] == "grinning face"
    assert grin.labels == ("smileys-emotion", "face-smiling")
    assert grin.extra["hexcode"] == "1F600" and "smile" in grin.extra["tags"]
    # Independent reference: the raw file, line by line.
    with open(OPENMOJI / "data.jsonl", encoding="utf-8") as f:
        raw = {e["image"]: e for e in map(json.loads, f)}
    assert all(tuple(raw[r.id]["captions"]) == r.captions for r in ds.records)


def test_flickr8k_1k_and_fixed_split() -> None:
    _need(FLICKR)
    ds = load_dataset(FLICKR)
    assert len(ds) == 1000 and ds.skipped == []
    texts, owner = ds.captions()
    assert len(texts) == 5000 and owner.tolist() == sorted(owner.tolist())
    assert all(len(r.captions) == 5 for r in ds.records)

    split = split_sorted(ds, FLICKR8K_1K_SIZES)
    assert split.sizes == (700, 100, 200)
    assert split.train == sorted(split.train) and split.test == sorted(split.test)
    assert split.train[-1] < split.val[0] and split.val[-1] < split.test[0]
    assert set(split.train) | set(split.val) | set(split.test) == set(ds.ids)
    assert split.train[0] == "images/1000268201_693b08cb0e.jpg"
    train, val, test = split.apply(ds)
    assert (len(train), len(val), len(test)) == (700, 100, 200)
    assert len(test.captions()[0]) == 1000
    assert ds.fingerprint() == load_dataset(FLICKR, check_images=False).fingerprint()

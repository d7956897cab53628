"""Relevance from any record field: ``Dataset.labels_of`` / ``label_matrix(field=...)``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xmodal.datasets import Dataset, Record, load_dataset

FASHION = Path(__file__).parents[1].parent / "shared" / "data" / "fashion"


def _toy() -> Dataset:
    recs = [
        Record("a", None, ("x",), ("L1",), {"colour": "red", "tags": ["t1", "t2"]}),
        Record("b", None, ("y",), ("L2",), {"colour": "blue", "tags": []}),
        Record("c", None, ("z",), (), {"tags": ["t2"], "size": 3}),
    ]
    return Dataset("toy", Path("."), recs)


def test_field_labels_strings_lists_missing_and_numbers() -> None:
    ds = _toy()
    assert ds.labels_of() == [("L1",), ("L2",), ()]
    assert ds.labels_of("colour") == [("red",), ("blue",), ()]
    assert ds.labels_of("tags") == [("t1", "t2"), (), ("t2",)]
    assert ds.labels_of("size") == [(), (), ("3",)]
    assert ds.label_names("tags") == ["t1", "t2"]
    np.testing.assert_array_equal(
        ds.label_matrix(field="tags"), [[True, True], [False, False], [False, True]]
    )
    # columns in a given order; unknown names stay empty columns
    np.testing.assert_array_equal(
        ds.label_matrix(["blue", "green"], field="colour"),
        [[False, False], [True, False], [False, False]],
    )
    # the default is unchanged: Record.labels
    np.testing.assert_array_equal(ds.label_matrix(), [[True, False], [False, True], [False, False]])


def test_unknown_field_names_the_fields_there_are() -> None:
    with pytest.raises(ValueError, match=r"'subCategory'.*\['colour', 'size', 'tags'\]"):
        _toy().label_matrix(field="subCategory")


def test_fashion_article_type_and_sub_category() -> None:
    if not (FASHION / "data.jsonl").is_file():
        pytest.skip(f"real data not found at {FASHION} (expected ../shared/data next to the repo)")
    ds = load_dataset(FASHION, check_images=False)
    assert len(ds) == 9583
    # labels = [articleType]: the field gives the same matrix
    np.testing.assert_array_equal(ds.label_matrix(field="articleType"), ds.label_matrix())
    sub = ds.label_matrix(field="subCategory")
    assert sub.shape == (9583, 30) and (sub.sum(axis=1) == 1).all()
    # independent reference: the raw file, line by line
    with open(FASHION / "data.jsonl", encoding="utf-8") as f:
        raw_entries = {e["image"]: e for e in map(json.loads, f)}
    raw = {k: e["subCategory"] for k, e in raw_entries.items()}
    masters = {e["masterCategory"] for e in raw_entries.values()}
    assert ds.label_names("masterCategory") == sorted(masters)
    names = ds.label_names("subCategory")
    assert [names[j] for j in sub.argmax(axis=1)] == [raw[r.id] for r in ds.records]
    # subCategory relevance is coarser: far more relevant pairs than at articleType
    art = ds.label_matrix()
    pairs = [int((m.sum(axis=0).astype(np.int64) ** 2).sum()) for m in (art, sub)]
    assert pairs[1] > 2 * pairs[0]

"""read_karpathy and karpathy_split on a small synthetic split file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from xmodal.datasets import BadInputError, karpathy_split, load_dataset, read_karpathy


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)


def _sent(raw: str) -> dict:
    return {"raw": raw, "tokens": raw.lower().split(), "imgid": 0, "sentid": 0}


FLICKR = {
    "dataset": "flickr30k",
    "images": [
        {"filename": "3.jpg", "imgid": 0, "split": "test", "sentences": [_sent("Three dogs.")]},
        {
            "filename": "1.jpg",
            "imgid": 1,
            "split": "train",
            "sentences": [_sent("One."), _sent("1")],
        },
        {"filename": "2.jpg", "imgid": 2, "split": "val", "sentences": [{"tokens": ["a", "b"]}]},
        {"filename": "4.jpg", "imgid": 3, "split": "restval", "sentences": [_sent("Four.")]},
    ],
}


def test_reads_captions_split_and_images_subfolder(tmp_path: Path) -> None:
    for i in range(1, 5):
        _img(tmp_path / "images" / f"{i}.jpg")
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps(FLICKR))
    ds = read_karpathy(path)
    assert ds.root == tmp_path / "images"
    assert ds.name == "flickr30k"
    assert ds.ids == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert ds.records[0].captions == ("One.", "1")
    assert ds.records[1].captions == ("a b",)  # tokens joined when raw is missing
    assert [r.extra["split"] for r in ds.records] == ["train", "val", "test", "restval"]
    assert ds.records[0].extra["imgid"] == 1

    split = karpathy_split(ds)
    assert (split.train, split.val, split.test) == (["1.jpg", "4.jpg"], ["2.jpg"], ["3.jpg"])
    assert karpathy_split(ds, restval="drop").train == ["1.jpg"]
    with pytest.raises(ValueError, match="restval"):
        karpathy_split(ds, restval="nowhere")
    train, val, test = split.apply(ds)
    assert train.ids == ["1.jpg", "4.jpg"] and val.ids == ["2.jpg"] and test.ids == ["3.jpg"]
    assert load_dataset(path).ids == ds.ids  # auto-detected as karpathy


def test_filepath_and_explicit_root(tmp_path: Path) -> None:
    data = {
        "images": [
            {"filepath": "val2014", "filename": "x.jpg", "split": "val", "cocoid": 5,
             "sentences": [_sent("A cat.")]},
            {"filepath": "train2014", "filename": "y.jpg", "split": "train",
             "sentences": [_sent("A dog.")]},
        ]
    }  # fmt: skip
    _img(tmp_path / "coco" / "val2014" / "x.jpg")
    _img(tmp_path / "coco" / "train2014" / "y.jpg")
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(data))
    ds = read_karpathy(path, image_root=tmp_path / "coco")
    assert ds.ids == ["train2014/y.jpg", "val2014/x.jpg"]
    assert ds.records[1].extra == {"split": "val", "cocoid": 5}
    assert ds.name == "coco"
    with pytest.raises(BadInputError, match="image file not found"):
        read_karpathy(path)  # default root is the JSON's folder: images are not there


def test_bad_entries(tmp_path: Path) -> None:
    for i in range(1, 4):
        _img(tmp_path / f"{i}.jpg")
    data = {
        "images": [
            {"filename": "1.jpg", "split": "train", "sentences": [_sent("ok"), _sent(" ")]},
            {"filename": "2.jpg", "sentences": [_sent("no split")]},
            {"filename": "3.jpg", "split": "test", "sentences": [_sent("")]},
            {"filename": "1.jpg", "split": "train", "sentences": [_sent("again")]},
        ]
    }
    path = tmp_path / "dataset_x.json"
    path.write_text(json.dumps(data))
    full = json.dumps(data)
    with pytest.raises(BadInputError, match=r"images\[1\] \(2.jpg\) needs a string 'split'") as e:
        read_karpathy(path)
    assert e.value.path == path
    del data["images"][1:]
    path.write_text(json.dumps(data))
    with pytest.raises(BadInputError, match=r"image '1\.jpg': caption 2 is empty"):
        read_karpathy(path)
    path.write_text(full)
    ds = read_karpathy(path, on_bad="skip")
    assert ds.ids == ["1.jpg"] and ds.records[0].captions == ("ok",)
    joined = "\n".join(ds.skipped)
    assert "needs a string 'split'" in joined
    assert "repeats image '1.jpg'" in joined
    assert "no valid caption left" in joined
    assert len(ds.skipped) == 5  # 1 caption of 1.jpg, 2.jpg, caption + record of 3.jpg, dup

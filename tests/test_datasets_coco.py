"""read_coco: captions JSON + optional instances JSON, image-root discovery, bad entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from xmodal.datasets import BadInputError, load_dataset, read_coco


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)


CAPTIONS = {
    "info": {},
    "images": [
        {"id": 42, "file_name": "b.jpg", "width": 4, "height": 4},
        {"id": 7, "file_name": "a.jpg"},
        {"id": 9, "file_name": "c.jpg"},
    ],
    "annotations": [
        {"id": 1, "image_id": 42, "caption": "a bee on a flower"},
        {"id": 2, "image_id": 7, "caption": "an ant"},
        {"id": 3, "image_id": 42, "caption": "a bee again"},
    ],
}
INSTANCES = {
    "images": CAPTIONS["images"],
    "categories": [{"id": 1, "name": "insect"}, {"id": 2, "name": "plant"}],
    "annotations": [
        {"image_id": 42, "category_id": 2},
        {"image_id": 42, "category_id": 1},
        {"image_id": 42, "category_id": 1},
        {"image_id": 7, "category_id": 1},
        {"image_id": 1000, "category_id": 2},  # not in the captions file: ignored
    ],
}


def _setup(tmp_path: Path, captions: dict = CAPTIONS) -> Path:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _img(tmp_path / "images" / name)
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(captions))
    (tmp_path / "instances.json").write_text(json.dumps(INSTANCES))
    return path


def test_captions_and_labels(tmp_path: Path) -> None:
    path = _setup(tmp_path)
    ds = read_coco(path, instances=tmp_path / "instances.json")
    assert ds.ids == ["a.jpg", "b.jpg", "c.jpg"]
    assert ds.root == tmp_path / "images"  # found the images/ subfolder
    a, b, c = ds.records
    assert b.captions == ("a bee on a flower", "a bee again")
    assert b.labels == ("insect", "plant")
    assert a.labels == ("insect",) and c.labels == () and c.captions == ()
    assert b.extra == {"coco_id": 42}
    assert b.image == tmp_path / "images" / "b.jpg"
    assert ds.name == "captions"
    # The same through the auto-detecting loader.
    auto = load_dataset(path, instances=tmp_path / "instances.json")
    assert [(r.id, r.captions, r.labels) for r in auto.records] == [
        (r.id, r.captions, r.labels) for r in ds.records
    ]


def test_coco_layout_split_folder(tmp_path: Path) -> None:
    # annotations/captions_val2017.json with images in ../val2017/
    _img(tmp_path / "val2017" / "a.jpg")
    ann = tmp_path / "annotations" / "captions_val2017.json"
    ann.parent.mkdir()
    ann.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg"}],
                "annotations": [{"image_id": 1, "caption": "x"}],
            }
        )
    )
    ds = read_coco(ann)
    assert ds.root == tmp_path / "val2017" and ds.ids == ["a.jpg"]
    ds2 = read_coco(ann, image_root=tmp_path / "val2017", check_images=False)
    assert ds2.ids == ["a.jpg"]


def test_bad_entries(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(CAPTIONS))
    bad["annotations"].append({"image_id": 5, "caption": "orphan"})
    bad["annotations"].append({"image_id": 9, "caption": "   "})
    bad["images"].append({"id": 11})
    path = _setup(tmp_path, bad)
    with pytest.raises(BadInputError, match=r"images\[3\] needs 'file_name'") as e:
        read_coco(path)
    assert e.value.path == path
    ds = read_coco(path, on_bad="skip")
    assert ds.ids == ["a.jpg", "b.jpg"]  # c.jpg lost its only caption
    assert len(ds.skipped) == 4
    joined = "\n".join(ds.skipped)
    assert "unknown image_id 5" in joined and "caption 1 is empty" in joined
    assert "no valid caption left" in joined


def test_missing_image_and_malformed_files(tmp_path: Path) -> None:
    path = _setup(tmp_path)
    (tmp_path / "images" / "c.jpg").unlink()
    with pytest.raises(BadInputError, match=r"c\.jpg: image file not found") as e:
        read_coco(path)
    assert e.value.path == path
    assert read_coco(path, on_bad="skip").ids == ["a.jpg", "b.jpg"]

    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(BadInputError, match="malformed JSON") as e:
        read_coco(broken)
    assert e.value.line == 1
    (tmp_path / "inst.json").write_text(json.dumps({"annotations": [{"image_id": 7}]}))
    with pytest.raises(BadInputError, match="instances"):
        read_coco(path, instances=tmp_path / "inst.json", on_bad="skip")

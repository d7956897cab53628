"""load_dataset: format auto-detection, options, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from xmodal.datasets import BadInputError, detect_format, load_dataset


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)


def test_detects_each_format(tmp_path: Path) -> None:
    jsonl_dir = tmp_path / "j"
    _img(jsonl_dir / "images" / "a.png")
    (jsonl_dir / "data.jsonl").write_text(json.dumps({"image": "images/a.png"}) + "\n")
    folder = tmp_path / "f"
    _img(folder / "a.png")
    coco = tmp_path / "c.json"
    coco.write_text(json.dumps({"images": [], "annotations": []}))
    karpathy = tmp_path / "dataset_k.json"
    karpathy.write_text(json.dumps({"images": [{"filename": "a", "sentences": []}]}))
    mat = tmp_path / "m.mat"
    scipy.io.savemat(mat, {"I_tr": np.zeros((2, 3))})
    csv = folder / "caps.csv"
    csv.write_text("image,caption\na.png,hello\n")
    expected = {
        jsonl_dir: "jsonl",
        jsonl_dir / "data.jsonl": "jsonl",
        folder: "folder",
        coco: "coco",
        karpathy: "karpathy",
        mat: "mat",
        csv: "folder",
    }
    for path, fmt in expected.items():
        assert detect_format(path) == fmt, path
    assert load_dataset(jsonl_dir).ids == ["images/a.png"]
    assert load_dataset(folder).records[0].captions == ()  # caps.csv is not a default name
    assert load_dataset(folder, captions=csv).records[0].captions == ("hello",)
    assert load_dataset(csv).records[0].captions == ("hello",)
    assert len(load_dataset(coco)) == 0
    assert load_dataset(mat).image_features.shape == (2, 3)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file"):
        load_dataset(tmp_path / "nope")
    other = tmp_path / "x.json"
    other.write_text("[1, 2]")
    with pytest.raises(BadInputError, match="neither a COCO"):
        load_dataset(other)
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(BadInputError, match="cannot tell the format"):
        load_dataset(tmp_path / "x.bin")
    with pytest.raises(ValueError, match="format must be one of"):
        load_dataset(tmp_path, format="parquet")
    with pytest.raises(ValueError, match="instances not accepted by the folder reader"):
        load_dataset(tmp_path, instances="x.json")
    with pytest.raises(ValueError, match="on_bad"):
        load_dataset(tmp_path, on_bad="warn")  # type: ignore[arg-type]

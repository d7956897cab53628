"""precomputed: features handed over from the dataset or a .npy file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xmodal.datasets.record import Dataset, Record
from xmodal.encoders import get_image_encoder, get_text_encoder
from xmodal.encoders.precomputed import PrecomputedImageEncoder, PrecomputedTextEncoder
from xmodal.errors import BadInputError


def feature_dataset(n: int = 4) -> Dataset:
    rng = np.random.default_rng(0)
    records = [Record(id=f"r{i}", image=None, captions=(f"c{i}a", f"c{i}b")) for i in range(n)]
    return Dataset(
        name="mat",
        root=Path("."),
        records=records,
        image_features=rng.normal(size=(n, 5)).astype(np.float32),
        text_features=rng.normal(size=(n, 3)),
    )


def test_dataset_arrays_are_handed_over_untouched() -> None:
    ds = feature_dataset()
    img = get_image_encoder("precomputed")
    txt = get_text_encoder("precomputed")
    assert img.features(ds) is ds.image_features
    assert txt.features(ds) is ds.text_features
    assert (img.dim, txt.dim) == (5, 3)
    assert img.key == "precomputed:image" and txt.key == "precomputed:text"


def test_npy_file(tmp_path: Path) -> None:
    ds = feature_dataset()
    arr = np.arange(8 * 2, dtype=np.float32).reshape(8, 2)  # one row per caption
    np.save(tmp_path / "t.npy", arr)
    enc = PrecomputedTextEncoder(path=tmp_path / "t.npy")
    assert enc.dim == 2 and enc.key.startswith("precomputed@")
    np.testing.assert_array_equal(enc.features(ds), arr)
    wrong = PrecomputedImageEncoder(path=tmp_path / "t.npy")  # 8 rows, 4 records
    with pytest.raises(ValueError, match=r"t\.npy: 8 image feature rows.*needs 4"):
        wrong.features(ds)


def test_missing_features_and_bad_files(tmp_path: Path) -> None:
    ds = feature_dataset()
    ds.image_features = None
    with pytest.raises(ValueError, match="no precomputed image features"):
        PrecomputedImageEncoder().features(ds)
    with pytest.raises(BadInputError, match="not found"):
        PrecomputedImageEncoder(path=tmp_path / "missing.npy")
    np.save(tmp_path / "one_d.npy", np.zeros(3))
    with pytest.raises(BadInputError, match="2-D"):
        PrecomputedImageEncoder(path=tmp_path / "one_d.npy")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(BadInputError, match=r"junk\.npy"):
        PrecomputedImageEncoder(path=tmp_path / "junk.npy")


def test_cannot_encode_new_inputs() -> None:
    assert not PrecomputedTextEncoder().can_encode
    assert not PrecomputedImageEncoder().can_encode
    with pytest.raises(ValueError, match="cannot encode new texts"):
        PrecomputedTextEncoder().encode(["hello"])
    with pytest.raises(ValueError, match="cannot encode new images"):
        PrecomputedImageEncoder().forward(np.zeros((1, 3, 2, 2)))  # type: ignore[arg-type]

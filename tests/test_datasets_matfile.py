"""read_mat: MATLAB v7 (scipy), v7.3-style HDF5 (transposed), plain HDF5; keys, names."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from xmodal.datasets import BadInputError, load_dataset, read_mat

N, DI, DT, C = 12, 6, 9, 4
NAMES = ["animals", "sky", "water", "people"]


@pytest.fixture
def source() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = (rng.random((N, C)) < 0.4).astype(np.uint8)
    labels[3] = 0  # an item with no label
    return {
        "image": rng.standard_normal((N, DI)).astype(np.float64),
        "text": (rng.random((N, DT)) < 0.3).astype(np.float64),
        "labels": labels,
    }


def _expected_labels(labels: np.ndarray, names: list[str]) -> list[tuple[str, ...]]:
    return [tuple(names[j] for j in range(labels.shape[1]) if labels[i, j] == 1) for i in range(N)]


def _check(ds, source: dict[str, np.ndarray], names: list[str]) -> None:
    assert len(ds) == N
    assert ds.ids == sorted(ds.ids) and ds.ids[0] == "00000" and ds.ids[-1] == "00011"
    assert all(r.image is None and r.captions == () for r in ds.records)
    assert ds.image_features.dtype == np.float32 and ds.text_features.dtype == np.float32
    np.testing.assert_array_equal(ds.image_features, source["image"].astype(np.float32))
    np.testing.assert_array_equal(ds.text_features, source["text"].astype(np.float32))
    assert [r.labels for r in ds.records] == _expected_labels(source["labels"], names)
    assert ds.records[3].labels == ()
    np.testing.assert_array_equal(ds.label_matrix(names), source["labels"].astype(bool))


def test_v7_mat_with_cellstr_names(tmp_path: Path, source) -> None:
    path = tmp_path / "mirflickr.mat"
    names = np.empty((C, 1), dtype=object)
    names[:, 0] = NAMES
    scipy.io.savemat(
        path,
        {"I_tr": source["image"], "T_tr": source["text"], "L_tr": source["labels"], "names": names},
    )
    ds = read_mat(path)
    _check(ds, source, NAMES)
    assert ds.name == "mirflickr" and ds.root == tmp_path
    assert ds.records[5].extra == {"row": 5}
    assert load_dataset(path).ids == ds.ids


def test_v7_mat_default_names_and_sparse_tags(tmp_path: Path, source) -> None:
    import scipy.sparse

    path = tmp_path / "nus.mat"
    scipy.io.savemat(
        path,
        {
            "XAll": source["image"],
            "YAll": scipy.sparse.csc_matrix(source["text"]),
            "LAll": source["labels"],
        },
    )
    _check(read_mat(path), source, [f"label_{j}" for j in range(C)])


def _write_matlab73(path: Path, arrays: dict[str, np.ndarray], names: list[str] | None) -> None:
    """An HDF5 file laid out as MATLAB -v7.3 writes one: 512-byte user block with the MATLAB
    header, column-major arrays (so transposed as seen from h5py), cellstr as references."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, arr in arrays.items():
            d = f.create_dataset(key, data=np.ascontiguousarray(arr.T))
            d.attrs["MATLAB_class"] = np.bytes_("double")
        if names is not None:
            refs = f.create_group("#refs#")
            ref_arr = np.empty((1, len(names)), dtype=h5py.ref_dtype)
            for j, name in enumerate(names):
                chars = np.array([[ord(ch)] for ch in name], dtype=np.uint16).T
                d = refs.create_dataset(f"n{j}", data=chars)
                d.attrs["MATLAB_class"] = np.bytes_("char")
                ref_arr[0, j] = d.ref
            d = f.create_dataset("label_names", data=ref_arr, dtype=h5py.ref_dtype)
            d.attrs["MATLAB_class"] = np.bytes_("cell")
    header = (
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
        b"HDF5 schema 1.00 ."
    )
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" "))


def test_v73_hdf5_is_transposed(tmp_path: Path, source) -> None:
    path = tmp_path / "mir73.mat"
    _write_matlab73(
        path,
        {"I_tr": source["image"], "T_tr": source["text"], "L_tr": source["labels"]},
        names=NAMES,
    )
    with h5py.File(path, "r") as f:
        assert f["I_tr"].shape == (DI, N)  # what h5py sees: d x n
    _check(read_mat(path), source, NAMES)


def test_v73_orientation_by_header_when_ambiguous(tmp_path: Path) -> None:
    # Square arrays: the shapes cannot tell, the MATLAB 7.3 header does.
    square = np.arange(16, dtype=np.float64).reshape(4, 4)
    path = tmp_path / "square.mat"
    _write_matlab73(path, {"image_features": square}, names=None)
    np.testing.assert_array_equal(read_mat(path).image_features, square)
    plain = tmp_path / "square.h5"
    with h5py.File(plain, "w") as f:
        f["image_features"] = square
    np.testing.assert_array_equal(read_mat(plain).image_features, square)


def test_plain_h5_row_major_with_byte_names_and_groups(tmp_path: Path, source) -> None:
    path = tmp_path / "feats.h5"
    with h5py.File(path, "w") as f:
        f["features/image"] = source["image"]
        f["features/text"] = source["text"].astype(np.float32)
        f["labels"] = source["labels"].astype(bool)
        f["label_names"] = np.array([n.encode() for n in NAMES])
    ds = read_mat(path, image_key="features/image", text_key="features/text")
    _check(ds, source, NAMES)
    assert load_dataset(path, format="h5", image_key="features/image").image_features.shape == (
        N,
        DI,
    )


def test_mixed_orientation_is_resolved_per_array(tmp_path: Path, source) -> None:
    path = tmp_path / "mixed.h5"
    with h5py.File(path, "w") as f:
        f["image_features"] = source["image"]
        f["text_features"] = source["text"].T  # someone saved this one transposed
        f["labels"] = source["labels"]
    _check(read_mat(path), source, [f"label_{j}" for j in range(C)])


def test_class_index_labels(tmp_path: Path) -> None:
    path = tmp_path / "cls.mat"
    scipy.io.savemat(
        path, {"image_features": np.zeros((3, 2)), "labels": np.array([[2], [0], [1]])}
    )
    assert [r.labels for r in read_mat(path).records] == [("label_2",), ("label_0",), ("label_1",)]


def test_non_finite_rows_and_bad_files(tmp_path: Path, source) -> None:
    image = source["image"].copy()
    image[2, 1] = np.nan
    path = tmp_path / "nan.mat"
    scipy.io.savemat(path, {"I_tr": image, "T_tr": source["text"], "L_tr": source["labels"]})
    with pytest.raises(BadInputError, match="row 2 has non-finite image features"):
        read_mat(path)
    ds = read_mat(path, on_bad="skip")
    assert len(ds) == N - 1 and "00002" not in ds.ids and len(ds.skipped) == 1
    keep = [i for i in range(N) if i != 2]
    np.testing.assert_array_equal(ds.image_features, image[keep].astype(np.float32))
    np.testing.assert_array_equal(ds.text_features, source["text"][keep].astype(np.float32))

    with pytest.raises(BadInputError, match="image key 'I_te' not found"):
        read_mat(path, image_key="I_te")
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"foo": np.zeros((2, 2))})
    with pytest.raises(BadInputError, match="no image features"):
        read_mat(other)
    bad_n = tmp_path / "badn.mat"
    scipy.io.savemat(bad_n, {"I_tr": np.zeros((5, 3)), "L_tr": np.zeros((7, 2))})
    with pytest.raises(BadInputError, match="disagree on the number of items"):
        read_mat(bad_n)
    names = tmp_path / "names.mat"
    scipy.io.savemat(names, {"I_tr": np.zeros((5, 3)), "L_tr": np.zeros((5, 2)), "names": ["a"]})
    with pytest.raises(BadInputError, match="1 label names for 2 label columns"):
        read_mat(names)
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"\x00" * 300)
    with pytest.raises(BadInputError, match=r"junk\.mat"):
        read_mat(junk)
    junk.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(BadInputError, match=r"junk\.mat"):
        read_mat(junk)

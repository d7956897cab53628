"""The on-disk index: create, append, delete as atomic versions; manifest checks catch corruption."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from xmodal.datasets.record import Record
from xmodal.evaluation import pack_codes
from xmodal.index import (
    EncodedItems,
    IndexFormatError,
    Snapshot,
    append_items,
    create_index,
    delete_items,
    is_index_dir,
)
from xmodal.index.manifest import POINTER, VERSIONS, read_pointer

DIM, BITS = 16, 32


def make_items(n: int, start: int = 0, captions: int = 2, seed: int = 0) -> EncodedItems:
    """``n`` records ``r{start}..``; record i has ``captions`` captions and label ``L{i % 3}``."""
    rng = np.random.default_rng(seed + start)
    records = [
        Record(
            f"r{i}", Path(f"img/{i}.png"), tuple(f"caption {i}.{j}" for j in range(captions)),
            (f"L{i % 3}",), {"n": i},
        )
        for i in range(start, start + n)
    ]  # fmt: skip
    iv = rng.standard_normal((n, DIM)).astype(np.float32)
    iv /= np.linalg.norm(iv, axis=1, keepdims=True)
    tv = rng.standard_normal((n * captions, DIM)).astype(np.float32)
    tv /= np.linalg.norm(tv, axis=1, keepdims=True)
    ic = pack_codes(rng.integers(0, 2, (n, BITS)))
    tc = pack_codes(rng.integers(0, 2, (n * captions, BITS)))
    return EncodedItems(records, iv, ic, tv, tc, np.repeat(np.arange(n), captions))


def build(path: Path, items: EncodedItems, **kw) -> None:
    create_index(path, items, codes={"source": "test"}, model={"kind": "none"}, **kw)


def vectors_by_key(snap: Snapshot, target: str = "image") -> dict[str, np.ndarray]:
    col = snap.collections[target]
    if target == "image":
        meta = snap.meta.items(col.ids.tolist())
        return {meta[i].key: col.vectors[p] for p, i in enumerate(col.ids.tolist())}
    texts = snap.meta.texts(col.ids.tolist())
    return {texts[i].caption: col.vectors[p] for p, i in enumerate(col.ids.tolist())}


def test_create_and_open_round_trip(tmp_path: Path) -> None:
    items = make_items(20)
    build(tmp_path / "ix", items)
    assert is_index_dir(tmp_path / "ix") and not is_index_dir(tmp_path)
    snap = Snapshot.open(tmp_path / "ix")
    assert snap.version == 1 and snap.dim == DIM and snap.bits == BITS
    img, txt = snap.collections["image"], snap.collections["text"]
    np.testing.assert_array_equal(img.ids, np.arange(20))
    np.testing.assert_array_equal(txt.ids, np.arange(40))
    np.testing.assert_array_equal(img.vectors, items.image_vectors)
    np.testing.assert_array_equal(txt.vectors, items.text_vectors)
    np.testing.assert_array_equal(img.codes, items.image_codes)
    np.testing.assert_array_equal(txt.codes, items.text_codes)
    meta = snap.meta.items([3])[3]
    assert (
        meta.key == "r3"
        and meta.labels == ("L0",)
        and meta.captions == ("caption 3.0", "caption 3.1")
    )
    assert meta.path == str(Path("img/3.png").resolve()) and meta.extra == {"n": 3}
    t = snap.meta.texts([7])[7]
    assert (t.item, t.position, t.caption) == (3, 1, "caption 3.1")
    np.testing.assert_array_equal(snap.meta.items_with_labels(["L1"]), np.arange(1, 20, 3))
    np.testing.assert_array_equal(
        snap.meta.texts_with_labels(["L1", "L2"]),
        np.sort(np.concatenate([[2 * i, 2 * i + 1] for i in range(20) if i % 3])),
    )
    manifest = snap.manifest
    assert manifest.next_ids == {"item": 20, "text": 40}
    assert set(manifest.files) >= {
        "meta.sqlite",
        "image.ids.npy",
        "image.float.faiss",
        "text.binary.faiss",
    }


def test_append_keeps_old_snapshots_readable(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build(ix, make_items(10))
    before = Snapshot.open(ix)
    append_items(ix, make_items(5, start=10))
    after = Snapshot.open(ix)
    assert (before.version, after.version) == (1, 2)
    assert len(before.collections["image"]) == 10 and len(after.collections["image"]) == 15
    np.testing.assert_array_equal(after.collections["image"].ids, np.arange(15))
    np.testing.assert_array_equal(after.collections["text"].ids, np.arange(30))
    new = make_items(5, start=10)
    np.testing.assert_array_equal(after.collections["image"].vectors[10:], new.image_vectors)
    # the old snapshot still answers from its own files
    assert before.meta.count("items") == 10
    np.testing.assert_array_equal(before.collections["image"].vectors, make_items(10).image_vectors)


def test_append_on_existing_ids(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build(ix, make_items(6))
    dup = make_items(3, start=4, seed=99)  # r4, r5 exist; r6 is new
    with pytest.raises(ValueError, match=r"2 item id\(s\) are already in the index.*r4"):
        append_items(ix, dup)
    append_items(ix, dup, on_exists="skip")
    snap = Snapshot.open(ix)
    got = vectors_by_key(snap)
    assert sorted(got) == [f"r{i}" for i in range(7)]
    np.testing.assert_array_equal(got["r4"], make_items(6).image_vectors[4])  # kept
    np.testing.assert_array_equal(got["r6"], dup.image_vectors[2])
    append_items(ix, dup, on_exists="replace")
    snap = Snapshot.open(ix)
    got = vectors_by_key(snap)
    assert sorted(got) == [f"r{i}" for i in range(7)] and snap.meta.count("texts") == 14
    for j, key in enumerate(["r4", "r5", "r6"]):
        np.testing.assert_array_equal(got[key], dup.image_vectors[j])
    # replaced items got new stable ids; nothing is reused
    assert snap.manifest.next_ids["item"] == 6 + 1 + 3
    assert sorted(snap.meta.ids_of_keys(["r4", "r5", "r6"]).values()) == [7, 8, 9]


def test_delete_renumbers_rows_and_keeps_the_rest(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    items = make_items(12)
    build(ix, items)
    delete_items(ix, ["r0", "r5", "r11"])
    snap = Snapshot.open(ix)
    keep = [i for i in range(12) if i not in (0, 5, 11)]
    np.testing.assert_array_equal(snap.collections["image"].ids, keep)
    np.testing.assert_array_equal(snap.collections["image"].vectors, items.image_vectors[keep])
    text_keep = [2 * i + j for i in keep for j in range(2)]
    np.testing.assert_array_equal(snap.collections["text"].ids, text_keep)
    np.testing.assert_array_equal(snap.collections["text"].codes, items.text_codes[text_keep])
    assert snap.meta.ids_of_keys(["r0", "r1"]) == {"r1": 1}
    with pytest.raises(ValueError, match="not in the index: 'r0'"):
        delete_items(ix, ["r0", "r1"])
    delete_items(ix, ["r0", "r1"], missing_ok=True)
    assert Snapshot.open(ix).meta.count("items") == 8


def test_old_versions_are_collected(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build(ix, make_items(4))
    for i in range(4):
        append_items(ix, make_items(1, start=10 + i))
    assert sorted(os.listdir(ix / VERSIONS)) == ["v000004", "v000005"]
    assert read_pointer(ix).version == 5


def test_build_over_an_existing_index(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build(ix, make_items(4))
    with pytest.raises(FileExistsError, match="already holds an index"):
        build(ix, make_items(3))
    build(ix, make_items(3, start=100), overwrite=True)
    snap = Snapshot.open(ix)
    assert snap.version == 2 and sorted(vectors_by_key(snap)) == ["r100", "r101", "r102"]


def test_append_rejects_other_sizes(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build(ix, make_items(4))
    other = make_items(2, start=50)
    other = EncodedItems(
        other.records, other.image_vectors[:, :8], other.image_codes, other.text_vectors[:, :8],
        other.text_codes, other.text_to_image,
    )  # fmt: skip
    with pytest.raises(ValueError, match="8-d vectors"):
        append_items(ix, other)


def test_bad_items_are_named() -> None:
    items = make_items(3)
    with pytest.raises(ValueError, match="image_vectors must be"):
        EncodedItems(
            items.records,
            items.image_vectors[:2],
            items.image_codes,
            items.text_vectors,
            items.text_codes,
            items.text_to_image,
        )
    with pytest.raises(ValueError, match="duplicate record id 'r0'"):
        EncodedItems(
            [items.records[0]] * 3,
            items.image_vectors,
            items.image_codes,
            np.zeros((6, DIM), np.float32),
            items.text_codes,
            items.text_to_image,
        )
    with pytest.raises(ValueError, match="packed uint8"):
        EncodedItems(
            items.records,
            items.image_vectors,
            items.image_codes.astype(np.int8),
            items.text_vectors,
            items.text_codes,
            items.text_to_image,
        )


# --- corruption and mismatch: a clear error, never wrong results -------------------------------


def current_dir(ix: Path) -> Path:
    return ix / VERSIONS / read_pointer(ix).dir


def test_not_an_index(tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match="not an xmodal index"):
        Snapshot.open(tmp_path)


def test_flipped_byte_is_caught_by_checksums(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build(ix, make_items(50))
    path = current_dir(ix) / "image.float.faiss"
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x01  # inside the vectors: structurally still a valid index
    os.unlink(path)  # versions are hard-linked: never modify in place
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=r"image\.float\.faiss: SHA-256 does not match"):
        Snapshot.open(ix)


def test_truncated_and_missing_files(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build(ix, make_items(50))
    path = current_dir(ix) / "text.binary.faiss"
    data = path.read_bytes()
    os.unlink(path)
    path.write_bytes(data[:-8])
    expected = rf"text\.binary\.faiss: size {len(data) - 8} bytes, manifest says {len(data)}"
    with pytest.raises(IndexFormatError, match=expected):
        Snapshot.open(ix, verify=False)
    os.unlink(path)
    with pytest.raises(IndexFormatError, match="missing"):
        Snapshot.open(ix, verify=False)


def test_manifest_tampering_and_mismatch(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build(ix, make_items(30))
    folder = current_dir(ix)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["collections"]["image"]["count"] = 29
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="manifest checksum does not match"):
        Snapshot.open(ix)
    # a consistent pointer, but the manifest disagrees with the files
    from xmodal.index.manifest import file_sha256

    pointer = json.loads((ix / POINTER).read_text())
    pointer["manifest_sha256"] = file_sha256(folder / "manifest.json")
    (ix / POINTER).write_text(json.dumps(pointer))
    with pytest.raises(IndexFormatError, match="manifest says 29"):
        Snapshot.open(ix)
    manifest["collections"]["image"]["count"] = 30
    manifest["dim"] = DIM * 2
    (folder / "manifest.json").write_text(json.dumps(manifest))
    pointer["manifest_sha256"] = file_sha256(folder / "manifest.json")
    (ix / POINTER).write_text(json.dumps(pointer))
    with pytest.raises(IndexFormatError, match=f"manifest says 30 of {2 * DIM}-d"):
        Snapshot.open(ix)
    manifest["format"] = "something-else/9"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    pointer["manifest_sha256"] = file_sha256(folder / "manifest.json")
    (ix / POINTER).write_text(json.dumps(pointer))
    with pytest.raises(IndexFormatError, match="unsupported index format"):
        Snapshot.open(ix)


def test_garbage_metadata_and_swapped_files(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build(ix, make_items(30))
    folder = current_dir(ix)
    meta = folder / "meta.sqlite"
    size = meta.stat().st_size
    os.unlink(meta)
    meta.write_bytes(b"\x00" * size)
    with pytest.raises(IndexFormatError, match=r"meta\.sqlite"):
        Snapshot.open(ix, verify=False)
    # image and text binary indexes swapped: sizes differ, and so do counts
    build(tmp_path / "b", make_items(30))
    folder = current_dir(tmp_path / "b")
    a, b = folder / "image.binary.faiss", folder / "text.binary.faiss"
    tmp = folder / "swap"
    shutil.move(a, tmp)
    shutil.move(b, a)
    shutil.move(tmp, b)
    with pytest.raises(IndexFormatError):
        Snapshot.open(tmp_path / "b", verify=False)


def test_old_manifest_name_warns() -> None:
    import xmodal.index
    from xmodal.index.manifest import IndexManifest

    with pytest.warns(DeprecationWarning, match="IndexManifest"):
        assert xmodal.index.Manifest is IndexManifest

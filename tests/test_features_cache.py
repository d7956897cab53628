"""FeatureCache: encode once, memory-map after; manifests, keys, pass-through, resume after errors."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xmodal.datasets.record import Dataset, Record
from xmodal.encoders import ImageEncoder, TextEncoder, encode_images, get_text_encoder
from xmodal.errors import BadInputError
from xmodal.features import FeatureCache, partial_paths, read_manifest


class TinyColorEncoder(ImageEncoder):
    """Cheap and deterministic: the image shrunk to 2x2 pixels, as 12 numbers in 0..1."""

    name = "tiny-color"
    dim = 12

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.rows_encoded = 0

    @property
    def key(self) -> str:
        return "tiny-color/v1"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        small = np.asarray(image.resize((2, 2), Image.Resampling.BOX), dtype=np.float32)
        return torch.from_numpy(small.copy()).permute(2, 0, 1)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.rows_encoded += batch.shape[0]
        return batch.reshape(batch.shape[0], -1) / 255.0


class LengthTextEncoder(TextEncoder):
    """Cheap and deterministic: [length, words, vowels] of each text."""

    name = "length"
    dim = 3

    def encode(
        self, texts: Sequence[str], batch_size: int = 256, progress: bool = True
    ) -> np.ndarray:
        return np.array(
            [[len(t), len(t.split()), sum(c in "aeiou" for c in t)] for t in texts],
            dtype=np.float32,
        ).reshape(len(texts), 3)


def make_dataset(folder: Path, n: int = 7) -> Dataset:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)).save(path)
        caps = tuple(f"caption {j} of image {i}" for j in range(1 + i % 3))
        records.append(Record(id=path.name, image=path, captions=caps, labels=()))
    return Dataset(name="toy set", root=folder, records=records)


def test_encode_once_then_memory_map(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "data")
    cache = FeatureCache(tmp_path / "cache")
    enc = TinyColorEncoder()
    feats = cache.get_or_encode(ds, image_encoder=enc, chunk_size=3, num_workers=0, progress=False)
    assert isinstance(feats, np.memmap) and feats.dtype == np.float32 and not feats.flags.writeable
    assert feats.shape == (7, 12) and enc.rows_encoded == 7
    expected = encode_images(
        TinyColorEncoder(), [r.image for r in ds.records], num_workers=0, progress=False
    )
    np.testing.assert_array_equal(feats, expected)

    again = cache.get_or_encode(ds, image_encoder=enc, num_workers=0, progress=False)
    assert enc.rows_encoded == 7, "second call must come from the cache"
    np.testing.assert_array_equal(again, expected)

    npy = cache.path(ds, enc.key, "image")
    m = read_manifest(npy.with_suffix(".json"))
    assert (m.encoder, m.encoder_name, m.modality) == ("tiny-color/v1", "tiny-color", "image")
    assert (m.rows, m.dim, m.dtype, m.resumed_from) == (7, 12, "float32", 0)
    assert m.dataset == "toy set" and m.dataset_fingerprint == ds.fingerprint()
    assert m.xmodal_version and m.created.endswith("+00:00")
    leftovers = [p.name for p in npy.parent.iterdir() if p.suffix not in (".npy", ".json", ".lock")]
    assert leftovers == [] and not any(p.exists() for p in partial_paths(npy))
    assert [e.encoder for e in cache.entries()] == ["tiny-color/v1"]


def test_one_batch_decodes_in_process_and_workers_give_the_same_rows(tmp_path: Path) -> None:
    """A single batch forks no worker (it could overlap nothing); several batches use workers
    up to the batch count, and the features equal those decoded in this process."""
    from xmodal.encoders import image_loader

    paths = [r.image for r in make_dataset(tmp_path / "data").records]  # 7 images
    enc = TinyColorEncoder()
    assert image_loader(enc, paths, batch_size=64, num_workers=4).num_workers == 0
    assert image_loader(enc, paths, batch_size=3, num_workers=4).num_workers == 3
    assert image_loader(enc, paths, batch_size=3, num_workers=2).num_workers == 2
    in_process = encode_images(enc, paths, batch_size=3, num_workers=0, progress=False)
    workers = encode_images(enc, paths, batch_size=3, num_workers=2, progress=False)
    np.testing.assert_array_equal(in_process, workers)


def test_text_rows_are_flattened_captions(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "data")
    cache = FeatureCache(tmp_path / "cache")
    enc = LengthTextEncoder()
    feats = cache.get_or_encode(ds, text_encoder=enc, chunk_size=4, progress=False)
    texts, owner = ds.captions()
    assert feats.shape == (len(texts), 3) and len(texts) == 1 + 2 + 3 + 1 + 2 + 3 + 1
    np.testing.assert_array_equal(feats, enc.encode(texts))
    assert owner.tolist()[:3] == [0, 1, 1]
    # Image and text entries of one dataset live side by side, keyed apart.
    img = cache.get_or_encode(
        ds, modality="image", image_encoder=TinyColorEncoder(), num_workers=0, progress=False
    )
    assert img.shape == (7, 12) and len(cache.entries()) == 2


def test_changed_data_or_stale_manifest_re_encodes(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "data")
    cache = FeatureCache(tmp_path / "cache")
    enc = TinyColorEncoder()
    cache.get_or_encode(ds, image_encoder=enc, num_workers=0, progress=False)
    changed = Dataset(ds.name, ds.root, [*ds.records[:-1], Record("new", ds.records[0].image)])
    assert changed.fingerprint() != ds.fingerprint()
    cache.get_or_encode(changed, image_encoder=enc, num_workers=0, progress=False)
    assert enc.rows_encoded == 14
    assert cache.folder(changed) != cache.folder(ds)

    manifest = cache.path(ds, enc.key, "image").with_suffix(".json")
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "rows": 99}))
    assert cache.get(ds, enc.key, "image") is None
    cache.get_or_encode(ds, image_encoder=enc, num_workers=0, progress=False)
    assert enc.rows_encoded == 21
    assert cache.get(ds, enc.key, "image") is not None


def test_resume_after_a_bad_file(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "data")
    good = ds.records[5].image.read_bytes()
    ds.records[5].image.write_bytes(b"\0" * len(good))  # same size: same fingerprint
    cache = FeatureCache(tmp_path / "cache")
    enc = TinyColorEncoder()
    with pytest.raises(BadInputError, match=r"img5\.png"):
        cache.get_or_encode(
            ds, image_encoder=enc, batch_size=2, chunk_size=2, num_workers=0, progress=False
        )
    ds.records[5].image.write_bytes(good)
    enc.rows_encoded = 0
    feats = cache.get_or_encode(
        ds, image_encoder=enc, batch_size=2, chunk_size=2, num_workers=0, progress=False
    )
    assert enc.rows_encoded == 3, "rows 0..3 were committed before the error"
    assert cache.manifest(ds, enc.key, "image").resumed_from == 4
    fresh = encode_images(
        TinyColorEncoder(), [r.image for r in ds.records], num_workers=0, progress=False
    )
    np.testing.assert_array_equal(feats, fresh)


def test_precomputed_features_pass_through(tmp_path: Path) -> None:
    features = np.random.default_rng(0).normal(size=(3, 4))
    ds = Dataset(
        "mat",
        tmp_path,
        [Record(f"r{i}", None, ("x",)) for i in range(3)],
        image_features=features,
        text_features=features[:, :2],
    )
    cache = FeatureCache(tmp_path / "cache")
    assert cache.get_or_encode(ds, modality="image") is features
    assert cache.get_or_encode(ds, image_encoder="precomputed") is features
    assert cache.get_or_encode(ds, text_encoder="precomputed") is ds.text_features
    assert not (tmp_path / "cache").exists(), "pass-through must not write"
    with pytest.raises(ValueError, match="no image file"):
        cache.get_or_encode(ds, image_encoder=TinyColorEncoder(), progress=False)


def test_argument_errors(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "data", n=2)
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(ValueError, match="exactly one of"):
        cache.get_or_encode(ds)
    with pytest.raises(ValueError, match="modality must be"):
        cache.get_or_encode(ds, modality="audio", image_encoder=TinyColorEncoder())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no precomputed text features"):
        cache.get_or_encode(ds, modality="text")
    with pytest.raises(ValueError, match="must be fitted"):
        cache.get_or_encode(ds, text_encoder=get_text_encoder("tfidf"), progress=False)
    with pytest.raises(ValueError, match="must be an ImageEncoder"):
        cache.get_or_encode(ds, image_encoder=LengthTextEncoder())  # type: ignore[arg-type]


def _bmp_dataset(folder: Path, n: int = 6) -> Dataset:
    """Uncompressed BMPs: every 6x8 image has the same byte size, whatever its pixels."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        path = folder / f"img{i}.bmp"
        Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)).save(path)
        records.append(Record(id=path.name, image=path, captions=(f"image {i}",), labels=()))
    return Dataset(name="bmp set", root=folder, records=records)


def test_same_size_replacement_re_encodes_that_row(tmp_path: Path) -> None:
    import os

    ds = _bmp_dataset(tmp_path / "data")
    cache = FeatureCache(tmp_path / "cache")
    enc = TinyColorEncoder()
    before = np.array(cache.get_or_encode(ds, image_encoder=enc, num_workers=0, progress=False))
    target = ds.records[3].image
    stat = target.stat()
    Image.fromarray(np.full((6, 8, 3), 200, dtype=np.uint8)).save(target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    assert target.stat().st_size == stat.st_size and ds.fingerprint() == ds.fingerprint()
    assert cache.get(ds, enc.key, "image") is None, "a stale row must not be handed out"

    after = cache.get_or_encode(ds, image_encoder=enc, num_workers=0, progress=False)
    assert enc.rows_encoded == len(ds) + 1, "only the replaced row is encoded again"
    np.testing.assert_allclose(after[3], np.full(12, 200 / 255, dtype=np.float32), rtol=1e-6)
    np.testing.assert_array_equal(np.delete(after, 3, axis=0), np.delete(before, 3, axis=0))
    again = cache.get_or_encode(ds, image_encoder=enc, num_workers=0, progress=False)
    assert enc.rows_encoded == len(ds) + 1 and cache.get(ds, enc.key, "image") is not None
    np.testing.assert_array_equal(again, after)


def test_entry_without_digests_is_migrated_once_or_encoded_again(tmp_path: Path) -> None:
    import os

    from xmodal.features.content import digests_path

    ds = _bmp_dataset(tmp_path / "data")
    cache = FeatureCache(tmp_path / "cache")
    enc = TinyColorEncoder()
    cache.get_or_encode(ds, image_encoder=enc, num_workers=0, progress=False)
    sidecar = digests_path(cache.path(ds, enc.key, "image"))
    recorded = np.load(sidecar)
    sidecar.unlink()  # as written before row digests existed
    cache.get_or_encode(ds, image_encoder=enc, num_workers=0, progress=False)
    assert enc.rows_encoded == len(ds), "files older than the entry: digests recorded, no encoding"
    np.testing.assert_array_equal(np.load(sidecar), recorded)

    sidecar.unlink()
    future = ds.records[0].image.stat().st_mtime + 3600
    os.utime(ds.records[0].image, (future, future))  # modified after the entry was written
    cache.get_or_encode(ds, image_encoder=enc, num_workers=0, progress=False)
    assert enc.rows_encoded == 2 * len(ds), "cannot trust an unhashed entry: encoded again"
    np.testing.assert_array_equal(np.load(sidecar), recorded)

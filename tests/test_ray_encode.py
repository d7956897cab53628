"""Ray encoding on a local 2-worker cluster (127.0.0.1) equals single-process encoding.

Uses 96 OpenMoji records (the real data under ../shared/data) with EfficientNet-Lite0 and
MiniLM. Also: a run stopped after some shards resumes and encodes only the rest, and the
result lands in the ordinary feature cache (``FeatureCache.get_or_encode`` then reads it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'xmodal[scale]')")

from xmodal.datasets import load_dataset  # noqa: E402
from xmodal.distributed import ray_encode, shard_path, shards_folder  # noqa: E402
from xmodal.encoders import encode_images, get_image_encoder, get_text_encoder  # noqa: E402
from xmodal.features import FeatureCache, read_manifest  # noqa: E402

DATA = Path(__file__).parents[1].parent / "shared" / "data" / "openmoji"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA / "data.jsonl").is_file(), reason=f"{DATA} is not present"),
]


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(DATA).subset(range(96), name="openmoji-96")


def test_images_equal_single_process_and_resume(local_ray, dataset, tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache")
    enc = get_image_encoder("efficientnet-lite0", device="cpu")
    paths = [r.image for r in dataset.records]
    reference = encode_images(enc, paths, batch_size=32, num_workers=0, progress=False)

    first = ray_encode(
        dataset, cache, image_encoder="efficientnet-lite0", shard_size=16, actors=2,
        batch_size=16, max_shards=2,
    )  # fmt: skip
    assert (first.complete, first.shards, first.encoded, first.skipped) == (False, 6, 2, 0)
    npy = cache.path(dataset, enc.key, "image")
    folder = shards_folder(npy)
    done = sorted(p.name for p in folder.glob("shard-*.npy"))
    assert done == ["shard-00000.npy", "shard-00001.npy"]
    mtimes = {i: shard_path(folder, i).stat().st_mtime_ns for i in (0, 1)}
    assert cache.get(dataset, enc.key, "image") is None  # not assembled yet

    second = ray_encode(
        dataset, cache, image_encoder="efficientnet-lite0", shard_size=16, actors=2,
        batch_size=16, keep_shards=True,
    )  # fmt: skip
    assert (second.complete, second.encoded, second.skipped) == (True, 4, 2)
    assert {i: shard_path(folder, i).stat().st_mtime_ns for i in (0, 1)} == mtimes
    manifest = read_manifest(npy.with_suffix(".json"))
    assert (manifest.rows, manifest.dim, manifest.resumed_from) == (96, 1280, 32)

    cached = cache.get_or_encode(dataset, image_encoder=enc, progress=False)  # no re-encoding
    assert Path(cached.filename) == npy
    np.testing.assert_allclose(cached, reference, rtol=1e-4, atol=1e-4)
    third = ray_encode(dataset, cache, image_encoder="efficientnet-lite0", shard_size=16)
    assert third.cached and third.encoded == 0


def test_texts_equal_single_process(local_ray, dataset, tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache")
    stats = ray_encode(dataset, cache, text_encoder="minilm", shard_size=64, actors=2)
    assert stats.complete and stats.rows == len(dataset.captions()[0]) and stats.shards >= 2
    assert not shards_folder(stats.path).exists()  # removed once assembled
    enc = get_text_encoder("minilm", device="cpu")
    reference = enc.encode(dataset.captions()[0], batch_size=64, progress=False)
    got = cache.get_or_encode(dataset, text_encoder=enc, progress=False)
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-5)


def test_rejects_bad_arguments(dataset, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ray_encode(dataset, tmp_path, image_encoder="efficientnet-lite0", text_encoder="minilm")
    with pytest.raises(ValueError, match="shard_size"):
        ray_encode(dataset, tmp_path, text_encoder="minilm", shard_size=0)

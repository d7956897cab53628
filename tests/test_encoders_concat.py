"""``A+B`` image encoders: the parts' unit-length features side by side, through every path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xmodal.datasets.images import load_image
from xmodal.encoders import (
    ImageEncoder,
    check_encoder_name,
    encode_images,
    get_image_encoder,
)
from xmodal.encoders.concat import ConcatImageEncoder

DEMO = Path(__file__).parents[1] / "src" / "xmodal" / "demo_data" / "openmoji" / "images"
PARTS = ("efficientnet-lite0", "efficientnet-lite1")


@pytest.fixture(scope="module")
def images() -> list[Path]:
    return sorted(DEMO.glob("*.png"))[:7]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_features_are_the_parts_normalised_side_by_side(images: list[Path]) -> None:
    both = get_image_encoder("+".join(PARTS), device="cpu")
    assert isinstance(both, ConcatImageEncoder) and both.dim == 2560
    parts = [get_image_encoder(name, device="cpu") for name in PARTS]
    assert both.key == f"concat({parts[0].key},{parts[1].key})"
    assert both.transform.resize == 272  # lite1's shorter side, the larger of the two
    expected = np.concatenate(
        [_unit(encode_images(p, images, num_workers=0, progress=False)) for p in parts], axis=1
    )
    from_files = encode_images(both, images, batch_size=3, num_workers=2, progress=False)
    np.testing.assert_allclose(from_files, expected, atol=1e-6)
    in_memory = both.encode([load_image(p) for p in images])
    np.testing.assert_allclose(in_memory, expected, atol=1e-6)
    halves = (
        np.linalg.norm(from_files[:, :1280], axis=1),
        np.linalg.norm(from_files[:, 1280:], axis=1),
    )
    np.testing.assert_allclose(np.stack(halves), 1.0, atol=1e-5)


def test_concatenated_features_are_cached_under_their_own_key(tmp_path: Path) -> None:
    from xmodal.datasets.record import Dataset, Record
    from xmodal.features import FeatureCache

    paths = sorted(DEMO.glob("*.png"))[:4]
    ds = Dataset("four", DEMO, [Record(p.name, p, (p.stem,)) for p in paths])
    cache = FeatureCache(tmp_path)
    both = get_image_encoder("+".join(PARTS), device="cpu")
    first = np.array(cache.get_or_encode(ds, image_encoder=both, num_workers=0, progress=False))
    assert first.shape == (4, 2560)
    assert [e.encoder for e in cache.entries()] == [both.key]
    again = cache.get_or_encode(ds, image_encoder=both, num_workers=0, progress=False)
    np.testing.assert_array_equal(again, first)


def test_a_concatenation_of_cached_parts_is_joined_not_encoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xmodal.datasets.record import Dataset, Record
    from xmodal.features import FeatureCache
    from xmodal.features import cache as cache_module

    paths = sorted(DEMO.glob("*.png"))[:5]
    ds = Dataset("five", DEMO, [Record(p.name, p, (p.stem,)) for p in paths])
    cache = FeatureCache(tmp_path / "parts")
    parts = [get_image_encoder(name, device="cpu") for name in PARTS]
    for part in parts:
        cache.get_or_encode(ds, image_encoder=part, num_workers=0, progress=False)
    both = get_image_encoder("+".join(PARTS), device="cpu")
    encoded = np.array(
        FeatureCache(tmp_path / "fresh").get_or_encode(
            ds, image_encoder=both, num_workers=0, progress=False
        )
    )

    def no_encoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the parts are cached: nothing should be encoded")

    monkeypatch.setattr(cache_module, "iter_image_rows", no_encoding)
    joined = np.array(cache.get_or_encode(ds, image_encoder=both, num_workers=0, progress=False))
    np.testing.assert_allclose(joined, encoded, atol=1e-6)
    assert sorted(e.encoder for e in cache.entries()) == sorted([both.key, *(p.key for p in parts)])
    # a valid entry like any other: the same rows again, and a changed image is found stale
    again = cache.get_or_encode(ds, image_encoder=both, num_workers=0, progress=False)
    np.testing.assert_array_equal(again, joined)
    npy = cache.path(ds, both.key, "image")
    manifest = cache._valid_manifest(npy, both.key, "image", ds.fingerprint())
    assert manifest is not None and manifest.rows == 5 and manifest.dim == 2560
    assert cache.stale_rows(ds, npy, manifest, "image").size == 0


def test_bad_names_and_parts_are_clear_errors() -> None:
    check_encoder_name("image", "efficientnet-lite0+efficientnet-lite2")
    with pytest.raises(ValueError, match="empty part"):
        check_encoder_name("image", "efficientnet-lite0++efficientnet-lite1")
    with pytest.raises(ValueError, match="empty part"):
        get_image_encoder("efficientnet-lite0+", device="cpu")
    with pytest.raises(ValueError, match="unknown image encoder 'efficientnet-lite9'"):
        check_encoder_name("image", "efficientnet-lite0+efficientnet-lite9")
    with pytest.raises(ValueError, match="at least two"):
        ConcatImageEncoder([get_image_encoder("efficientnet-lite0", device="cpu")])


class _KeepsSize(ImageEncoder):
    """A part whose tensor has the image's own size: it cannot be joined."""

    name, dim, device = "keeps-size", 3, torch.device("cpu")

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.float().mean(dim=(2, 3))


def test_a_part_with_image_dependent_shape_is_refused() -> None:
    lite0 = get_image_encoder("efficientnet-lite0", device="cpu")
    with pytest.raises(ValueError, match="'keeps-size' preprocesses images to shapes that depend"):
        ConcatImageEncoder([lite0, _KeepsSize()])

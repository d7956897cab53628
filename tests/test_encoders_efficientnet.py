"""efficientnet-lite0: real ImageNet weights, 1280-d pooled features, batched file encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xmodal.encoders import encode_images, get_image_encoder
from xmodal.encoders.efficientnet import EfficientNetLite0Encoder
from xmodal.errors import BadInputError

skimage_data = pytest.importorskip(
    "skimage.data", reason="scikit-image (dev extra) gives test images"
)

DATA = Path(__file__).parents[1].parent / "shared" / "data"
OPENMOJI = DATA / "openmoji" / "images"


@pytest.fixture(scope="module")
def encoder() -> EfficientNetLite0Encoder:
    enc = get_image_encoder("efficientnet-lite0", device="cpu")
    assert isinstance(enc, EfficientNetLite0Encoder)
    return enc


@pytest.fixture(scope="module")
def emoji_paths() -> list[Path]:
    if not OPENMOJI.is_dir():
        pytest.skip(f"OpenMoji images not found at {OPENMOJI}")
    return sorted(OPENMOJI.glob("*.png"))[:8]


def test_packaged_weights_classify_real_photos(encoder: EfficientNetLite0Encoder) -> None:
    cat = Image.fromarray(skimage_data.chelsea())
    coffee = Image.fromarray(skimage_data.coffee())
    classes = encoder.classify([cat, coffee])
    assert 281 <= classes[0] <= 285, f"chelsea classified as ImageNet class {classes[0]}, not a cat"
    assert classes[1] == 967, f"coffee classified as ImageNet class {classes[1]}, not espresso"


def test_features_are_the_pooled_input_of_the_classifier(encoder: EfficientNetLite0Encoder) -> None:
    batch = torch.stack([encoder.preprocess(Image.fromarray(skimage_data.chelsea()))])
    feats = encoder.forward(batch)
    assert feats.shape == (1, 1280) and feats.dtype == torch.float32
    fc = encoder.model._fc
    # In eval mode (no dropout) the logits are exactly fc(pooled features).
    expected = encoder.logits(batch)
    np.testing.assert_allclose((feats @ fc.weight.T + fc.bias).numpy(), expected.numpy(), atol=1e-4)


def test_channels_last_matches_default_layout(encoder: EfficientNetLite0Encoder) -> None:
    batch = torch.stack([encoder.preprocess(Image.fromarray(skimage_data.coffee()))])
    x = (batch.float() - 127.0) / 128.0
    with torch.inference_mode():
        reference = encoder.model.extract_features(x.contiguous()).mean(dim=(2, 3))
    np.testing.assert_allclose(encoder.forward(batch).numpy(), reference.numpy(), atol=1e-4)


def test_preprocessing_is_tf_style(encoder: EfficientNetLite0Encoder) -> None:
    img = Image.fromarray(skimage_data.chelsea())  # 451 x 300
    x = encoder.preprocess(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.uint8
    # Independent reference: shorter side 300 -> 256 (long side int(451 * 256 / 300) = 384),
    # bicubic, then the centre 224 x 224 window.
    resized = np.asarray(img.resize((384, 256), Image.Resampling.BICUBIC))
    top, left = round((256 - 224) / 2), round((384 - 224) / 2)
    # (only the window is resampled, so PIL's fixed-point rounding may differ by a level or two)
    diff = np.abs(
        x.permute(1, 2, 0).numpy().astype(int) - resized[top : top + 224, left : left + 224]
    )
    assert diff.max() <= 2 and (diff > 0).mean() < 1e-3
    normalised = encoder._prepare(x[None])
    assert normalised.is_contiguous(memory_format=torch.channels_last)
    assert float(normalised.min()) >= -127 / 128 and float(normalised.max()) <= 128 / 128


def test_key_names_weights_and_preprocessing(encoder: EfficientNetLite0Encoder) -> None:
    assert encoder.key.startswith("efficientnet-lite0@")
    assert "bicubic256-crop224" in encoder.key
    assert encoder.dim == 1280


def test_encode_images_workers_match_in_process(encoder, emoji_paths) -> None:
    in_process = encode_images(encoder, emoji_paths, batch_size=3, num_workers=0, progress=False)
    workers = encode_images(encoder, emoji_paths, batch_size=3, num_workers=2, progress=False)
    assert in_process.shape == (len(emoji_paths), 1280) and in_process.dtype == np.float32
    np.testing.assert_array_equal(in_process, workers)
    # Row order = path order: the in-memory path gives the same rows.
    direct = encoder.encode([Image.open(p) for p in emoji_paths[:3]])
    np.testing.assert_allclose(direct, in_process[:3], atol=1e-5)
    # Different images give different features.
    assert np.abs(in_process[0] - in_process[1]).max() > 1e-2


def test_empty_path_list(encoder: EfficientNetLite0Encoder) -> None:
    out = encode_images(encoder, [], progress=False)
    assert out.shape == (0, 1280) and out.dtype == np.float32


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_image_is_named(encoder, emoji_paths, tmp_path: Path, num_workers: int) -> None:
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"definitely not a png")
    with pytest.raises(BadInputError, match=r"not-an-image\.png") as info:
        encode_images(
            encoder, [*emoji_paths[:2], bad], batch_size=2, num_workers=num_workers, progress=False
        )
    assert info.value.path == bad


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nope\.pth"):
        EfficientNetLite0Encoder(device="cpu", weights=tmp_path / "nope.pth")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(
    encoder: EfficientNetLite0Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = []
    for name in ("chelsea", "coffee", "astronaut"):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(getattr(skimage_data, name)()).save(paths[-1])
    gpu = EfficientNetLite0Encoder(device="cuda")
    assert gpu.key == encoder.key, "features from either device share a cache entry"
    on_cpu = encode_images(encoder, paths, batch_size=4, num_workers=0, progress=False)
    # Full float32 on the GPU: the same numbers up to summation order.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    exact = encode_images(gpu, paths, batch_size=4, num_workers=2, progress=False)
    np.testing.assert_allclose(exact, on_cpu, atol=1e-3)
    # With TF32 convolutions (PyTorch's default on Ampere and later) the features still agree
    # in direction, and the classifier still sees espresso.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    fast = encode_images(gpu, paths, batch_size=4, num_workers=2, progress=False)
    cos = (fast * on_cpu).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(on_cpu, axis=1)
    assert cos.min() > 0.99, cos
    assert gpu.classify([Image.fromarray(skimage_data.coffee())])[0] == 967

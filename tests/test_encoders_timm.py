"""timm:<name> with random weights (runs only with the optional extra ``clip``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

timm = pytest.importorskip(
    "timm",
    reason=(
        "timm is an optional extra (pip install 'xmodal[clip]'); `import timm` needs torchvision, "
        "and PyPI's torchvision does not load beside the CPU torch 2.13.0 used here "
        "(operator torchvision::nms does not exist)"
    ),
)

from conftest import noise_picture  # noqa: E402

from xmodal.encoders import encode_images, get_image_encoder  # noqa: E402
from xmodal.encoders.timm import TimmImageEncoder  # noqa: E402


@pytest.fixture(scope="module")
def name() -> str:
    tiny = timm.list_models("test_vit*") or timm.list_models("test_*")
    return tiny[0] if tiny else "resnet10t"


@pytest.fixture(scope="module")
def weights(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("timm") / f"{name}.pth"
    torch.save(timm.create_model(name, pretrained=False).state_dict(), path)
    return path


def picture(seed: int) -> Image.Image:
    return noise_picture(seed, (90, 70))


def test_random_weights_warn(name: str) -> None:
    with pytest.warns(UserWarning, match="random weights"):
        enc = get_image_encoder(f"timm:{name}", device="cpu", pretrained=False)
    assert "@random-" in enc.key and enc.dim > 0


def test_weights_file_gives_pooled_pre_logits(name: str, weights: Path) -> None:
    enc = get_image_encoder(f"timm:{name}", device="cpu", weights=weights)
    assert isinstance(enc, TimmImageEncoder)
    batch = torch.stack([enc.preprocess(picture(0)), enc.preprocess(picture(1))])
    ref = timm.create_model(name, pretrained=False)
    ref.load_state_dict(torch.load(weights, weights_only=True))
    ref.eval()
    with torch.no_grad():
        expected = ref.forward_head(ref.forward_features(batch), pre_logits=True).numpy()
    got = enc.forward(batch).numpy()
    assert got.shape == (2, enc.dim)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert enc.key == TimmImageEncoder(name, weights=weights, device="cpu").key


def test_encode_image_files(name: str, weights: Path, tmp_path: Path) -> None:
    enc = TimmImageEncoder(name, weights=weights, device="cpu")
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.jpg")
        picture(i).save(paths[-1], quality=95)
    out = encode_images(enc, paths, batch_size=2, num_workers=2, progress=False)
    assert out.shape == (3, enc.dim) and out.dtype == np.float32
    np.testing.assert_allclose(out, encode_images(enc, paths, num_workers=0, progress=False))


def test_mismatched_weights_and_bad_names(name: str, weights: Path, tmp_path: Path) -> None:
    state = torch.load(weights, weights_only=True)
    state.pop(next(iter(state)))
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(RuntimeError, match="Missing key"):
        TimmImageEncoder(name, weights=broken, device="cpu")
    with pytest.raises(ValueError, match="unknown timm model"):
        TimmImageEncoder("no_such_model_xyz", device="cpu")

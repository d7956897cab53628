"""open_clip:<arch> with a tiny random-weight config (runs only with the optional extra ``clip``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

open_clip = pytest.importorskip(
    "open_clip",
    reason=(
        "open_clip is an optional extra (pip install 'xmodal[clip]'); it needs torchvision, and "
        "PyPI's torchvision does not load beside the CPU torch 2.13.0 used here "
        "(operator torchvision::nms does not exist)"
    ),
)

from conftest import TINY_CLIP as ARCH  # noqa: E402
from conftest import noise_picture  # noqa: E402

from xmodal.encoders import encode_images, get_image_encoder, get_text_encoder  # noqa: E402
from xmodal.encoders.open_clip import OpenClipModel, load_open_clip  # noqa: E402


@pytest.fixture(scope="module")
def tiny_weights(tiny_clip_weights: Path) -> Path:
    return tiny_clip_weights


def picture(seed: int) -> Image.Image:
    return noise_picture(seed, (50, 40))


def test_random_weights_warn(tiny_weights: Path) -> None:
    with pytest.warns(UserWarning, match="random weights"):
        image, text = load_open_clip(ARCH, weights=None, device="cpu")
    assert image.dim == text.dim == 32
    assert "@random-" in image.key


def test_weights_file_is_loaded_strictly(tiny_weights: Path) -> None:
    image = get_image_encoder(f"open_clip:{ARCH}", device="cpu", weights=tiny_weights)
    text = get_text_encoder(f"open_clip:{ARCH}", device="cpu", weights=tiny_weights)
    # Independent reference: open_clip's own model with the same state dict.
    ref = open_clip.create_model(ARCH, pretrained=None)
    ref.load_state_dict(torch.load(tiny_weights, weights_only=True))
    ref.eval()
    batch = torch.stack([image.preprocess(picture(0)), image.preprocess(picture(1))])
    with torch.no_grad():
        expected_img = ref.encode_image(batch, normalize=True).numpy()
        tokens = open_clip.get_tokenizer(ARCH)(["a dog", "a plate of pasta"])
        expected_txt = ref.encode_text(tokens, normalize=True).numpy()
    np.testing.assert_allclose(image.forward(batch).numpy(), expected_img, atol=1e-5)
    got_txt = text.encode(["a dog", "a plate of pasta"], batch_size=1, progress=False)
    np.testing.assert_allclose(got_txt, expected_txt, atol=1e-5)
    assert (
        image.key == get_image_encoder(f"open_clip:{ARCH}", device="cpu", weights=tiny_weights).key
    )
    assert image.key != text.key and "@random" not in image.key


def test_encode_image_files(tiny_weights: Path, tmp_path: Path) -> None:
    image, _ = load_open_clip(ARCH, weights=tiny_weights, device="cpu")
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        picture(i).save(paths[-1])
    out = encode_images(image, paths, batch_size=2, num_workers=0, progress=False)
    assert out.shape == (3, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, image.encode([picture(i) for i in range(3)]), atol=1e-5)


def test_mismatched_weights_and_bad_names(tiny_weights: Path, tmp_path: Path) -> None:
    state = torch.load(tiny_weights, weights_only=True)
    state.pop(next(iter(state)))
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    with pytest.raises(RuntimeError, match="Missing key"):
        OpenClipModel(ARCH, weights=broken, device="cpu")
    with pytest.raises(ValueError, match="weights file not found"):
        OpenClipModel(ARCH, weights=tmp_path / "nope.pt", device="cpu")
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        OpenClipModel("no-such-arch", device="cpu")

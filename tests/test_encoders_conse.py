"""``conse:<classifier>``: zero-shot ImageNet-label embeddings in MiniLM's space (ConSE)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from xmodal.encoders import ImageEncoder
from xmodal.encoders.conse import ConSEImageEncoder, conse_embedding, imagenet_class_names
from xmodal.encoders.dual import load_dual_encoder
from xmodal.index import build_index
from xmodal.search import Searcher

PHOTOS = {"coffee": skimage_data.coffee, "cat": skimage_data.chelsea, "rocket": skimage_data.rocket}
QUERIES = {"coffee": "a cup of coffee", "cat": "a cat", "rocket": "a rocket on the launch pad"}


class _NoClassifier(ImageEncoder):
    name, dim, device = "plain", 4, torch.device("cpu")

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return torch.zeros(3, 2, 2)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(batch), 4)


@pytest.fixture(scope="module")
def towers() -> tuple[ConSEImageEncoder, object]:
    image, text = load_dual_encoder("conse:efficientnet-lite0", device="cpu")
    assert isinstance(image, ConSEImageEncoder)
    return image, text


def test_conse_embedding_is_the_weighted_mean_of_the_top_classes() -> None:
    probabilities = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    got = conse_embedding(probabilities, classes, top=2)
    want = np.array([[0.3, 0.6 + 0.3], [0.5 + 0.3, 0.3]])  # classes 1, 2 and 0, 2
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    for top in (0, 4):
        with pytest.raises(ValueError, match="top must be in"):
            conse_embedding(probabilities, classes, top=top)


def test_real_photos_land_near_their_captions(towers: tuple) -> None:
    image, text = towers
    assert text.name == "minilm" and image.dim == text.dim == 384
    assert len(imagenet_class_names()) == 1000 and imagenet_class_names()[967] == "espresso"
    photos = [Image.fromarray(f()) for f in PHOTOS.values()]
    emb = image.encode(photos)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ text.encode(list(QUERIES.values()), progress=False).T
    assert (sims.argmax(axis=1) == np.arange(len(PHOTOS))).all(), sims
    # forward = ConSE of the classifier's own probabilities (its fc layer over pooled features)
    clf = image.classifier
    batch = torch.stack([clf.preprocess(p) for p in photos])
    probs = clf.class_probabilities(clf.forward(batch))
    torch.testing.assert_close(probs, torch.softmax(clf.logits(batch), dim=1), atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        image.forward(batch).numpy(), conse_embedding(probs, image.class_embeddings, 10).numpy()
    )


def test_key_and_errors(towers: tuple) -> None:
    image, text = towers
    assert image.name == "conse:efficientnet-lite0"
    assert image.classifier.key in image.key and text.key in image.key and "/top10-" in image.key
    top3 = ConSEImageEncoder(image.classifier, text, top=3)
    assert top3.key != image.key
    with pytest.raises(ValueError, match="top must be in"):
        ConSEImageEncoder(image.classifier, text, top=0)
    with pytest.raises(ValueError, match="needs an ImageNet classifier"):
        ConSEImageEncoder(_NoClassifier(), text)


def test_zero_shot_index_of_real_photos(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, make in PHOTOS.items():
        Image.fromarray(make()).save(folder / f"{name}.jpg")
    build_index(
        None, folder, tmp_path / "ix", encoder="conse:efficientnet-lite0", bits=8,
        codes="random", cache_dir=tmp_path / "cache", progress=False,
    )  # fmt: skip
    searcher = Searcher(tmp_path / "ix")
    for name, query in QUERIES.items():
        assert searcher.text_to_image(query, k=1)[0].id == f"{name}.jpg", query

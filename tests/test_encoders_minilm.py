"""minilm: the packaged all-MiniLM-L6-v2, offline, 384-d unit vectors in input order."""

from __future__ import annotations

import numpy as np
import pytest

from xmodal.encoders import get_text_encoder
from xmodal.encoders.minilm import MiniLMEncoder

TEXTS = [
    "a dog runs on the beach",
    "a puppy running on sand",
    "a plate of pasta",
    "A child in a pink dress is climbing up a set of stairs in an entry way .",
    "",
    "grinning face with big eyes: awesome, big, eyes, face, grin, grinning, happy, mouth, open",
]


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    enc = get_text_encoder("minilm", device="cpu")
    assert isinstance(enc, MiniLMEncoder)
    return enc


def test_dim_and_unit_norm(encoder: MiniLMEncoder) -> None:
    emb = encoder.encode(TEXTS, progress=False)
    assert encoder.dim == 384
    assert emb.shape == (len(TEXTS), 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_semantic_sanity(encoder: MiniLMEncoder) -> None:
    dog, puppy, pasta = encoder.encode(TEXTS[:3], progress=False)
    close, far = float(dog @ puppy), float(dog @ pasta)
    assert close > far + 0.3, f"cos(dog, puppy)={close:.3f} should beat cos(dog, pasta)={far:.3f}"


def test_matches_sentence_transformers_reference(encoder: MiniLMEncoder) -> None:
    # Independent path: the library's own encode (its batching, its normalisation).
    reference = encoder.model.encode(
        TEXTS,
        batch_size=2,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    np.testing.assert_allclose(
        encoder.encode(TEXTS, batch_size=4, progress=False), reference, atol=1e-5
    )


def test_order_does_not_depend_on_batching(encoder: MiniLMEncoder) -> None:
    one_by_one = np.stack([encoder.encode([t], progress=False)[0] for t in TEXTS])
    batched = encoder.encode(TEXTS, batch_size=3, progress=False)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    shuffled = encoder.encode(TEXTS[::-1], batch_size=256, progress=False)
    np.testing.assert_allclose(shuffled[::-1], one_by_one, atol=1e-5)


def test_key_and_empty_input(encoder: MiniLMEncoder) -> None:
    assert encoder.key.startswith("minilm@") and "max256" in encoder.key
    assert encoder.encode([], progress=False).shape == (0, 384)


def test_bad_input_is_named(encoder: MiniLMEncoder) -> None:
    with pytest.raises(ValueError, match=r"texts\[1\] is int"):
        encoder.encode(["fine", 3], progress=False)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="single string"):
        encoder.encode("not a list", progress=False)

"""Intermediate encoders + backbone-top layers reassemble the full frozen encoders exactly.

The split is proven by reassembly: intermediate features (``minilm.tokens-l<k>``,
``efficientnet-lite0.blocks-<n>``) run through the pretrained top layers held by a head give the
full frozen encoder's features. Real weights (packaged) and real images (the shipped OpenMoji
demo) are used; no network and no external data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import xmodal
from xmodal.datasets.images import load_image
from xmodal.encoders import get_image_encoder, get_text_encoder, list_encoders
from xmodal.encoders.efficientnet import EfficientNetLite0Encoder
from xmodal.encoders.intermediate import token_mask
from xmodal.models import EfficientNetTopHead, MiniLMTopHead, tower_encoder
from xmodal.models.backbone_heads import MiniLMTop

TEXTS = [
    "A dog runs along the beach .",
    "Two children in red shirts are playing football in a muddy field next to some tall trees .",
    "hi",
]
DEMO_IMAGES = Path(xmodal.__file__).parent / "demo_data" / "openmoji" / "images"


@pytest.fixture(scope="module")
def minilm():
    return get_text_encoder("minilm", device="cpu")


@pytest.fixture(scope="module")
def tokens_l4():
    return get_text_encoder("minilm.tokens-l4", device="cpu", max_tokens=24)


@pytest.fixture(scope="module")
def l4_rows(tokens_l4) -> torch.Tensor:
    return torch.from_numpy(tokens_l4.encode(TEXTS, progress=False))


def test_names_are_registered_and_map_towers_to_encoders() -> None:
    names = list_encoders("*.*")
    assert {f"minilm.tokens-l{k}" for k in range(7)} <= set(names["text"])
    assert {f"efficientnet-lite0.blocks-{n}" for n in range(17)} <= set(names["image"])
    assert tower_encoder("minilm-top2") == "minilm.tokens-l4"
    assert tower_encoder("efficientnet-top1") == "efficientnet-lite0.blocks-15"
    assert tower_encoder("mlp") is None
    with pytest.raises(ValueError, match="unknown tower"):
        tower_encoder("bert-top2")
    with pytest.raises(ValueError, match="6 layers"):
        tower_encoder("minilm-top7")


def test_bad_cut_points_are_refused() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        get_text_encoder("minilm.tokens-l4", device="cpu", max_tokens=1)
    with pytest.raises(ValueError, match="top_layers"):
        MiniLMTop(7)


def test_token_rows_are_zero_padded_and_cache_keys_differ(tokens_l4, l4_rows, minilm) -> None:
    assert l4_rows.shape == (3, 24 * 384) and tokens_l4.dim == 24 * 384
    mask = token_mask(l4_rows.view(3, 24, 384))
    n_tokens = [len(tokens_l4.model.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert mask.sum(dim=1).tolist() == [min(n, 24) for n in n_tokens]
    assert mask[:, 0].all() and not mask[2, n_tokens[2] :].any()  # padding at the end only
    assert tokens_l4.key != minilm.key and "tokens-l4" in tokens_l4.key


def test_minilm_split_reproduces_the_sentence_embedding(l4_rows, minilm) -> None:
    # texts shorter than max_tokens: the reassembled model equals the full encoder
    full = minilm.encode(TEXTS, progress=False)
    head = MiniLMTopHead(2, out_dim=8).eval()
    with torch.no_grad():
        np.testing.assert_allclose(head.backbone(l4_rows).numpy(), full, atol=1e-4)
        # one text alone (no padding to trim) gives the same row
        np.testing.assert_allclose(head.backbone(l4_rows[2:]).numpy(), full[2:], atol=1e-4)
    # training mode only adds dropout: with it off, the output is unchanged
    top = MiniLMTop(2, dropout=0.0).train()
    np.testing.assert_allclose(top(l4_rows).detach().numpy(), full, atol=1e-4)


def test_efficientnet_split_reproduces_the_pooled_features() -> None:
    images = [load_image(p) for p in sorted(DEMO_IMAGES.glob("*.png"))[:2]]
    blocks15 = get_image_encoder("efficientnet-lite0.blocks-15", device="cpu")
    assert isinstance(blocks15, EfficientNetLite0Encoder)
    batch = torch.stack([blocks15.preprocess(im) for im in images])
    # the reference: efficientnet-lite0's own forward (same weights, loaded once: a second
    # model would double the slow first-call set-up of the CPU convolutions)
    full = EfficientNetLite0Encoder.forward(blocks15, batch).numpy()
    rows = blocks15.forward(batch)
    assert rows.shape == (2, 192 * 7 * 7) and blocks15.map_shape == (192, 7, 7)
    head = EfficientNetTopHead(1, out_dim=8).train()  # BN stays in eval mode while training
    with torch.no_grad():
        out = head.backbone(rows).numpy()  # the last block has no skip: no drop connect
    np.testing.assert_allclose(out, full, atol=1e-4, rtol=1e-5)

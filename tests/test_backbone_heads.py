"""Partial fine-tuning: intermediate encoders + backbone-top heads split the backbones exactly.

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
from xmodal.encoders.intermediate import token_mask
from xmodal.methods import build_method
from xmodal.models import (
    EfficientNetTopHead,
    MiniLMTopHead,
    ProjectionHead,
    build_tower,
    lr_scale,
    param_groups,
    set_lr_scale,
    tower_encoder,
)
from xmodal.models.backbone_heads import EfficientNetTop, MiniLMTop
from xmodal.training import PairedFeatures, TrainConfig, Trainer

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
def images():
    return [load_image(p) for p in sorted(DEMO_IMAGES.glob("*.png"))[:2]]


@pytest.fixture(scope="module")
def efficientnet():
    return get_image_encoder("efficientnet-lite0", device="cpu")


@pytest.fixture(scope="module")
def blocks15():
    return get_image_encoder("efficientnet-lite0.blocks-15", device="cpu")


@pytest.fixture(scope="module")
def l4_rows(tokens_l4) -> torch.Tensor:
    return torch.from_numpy(tokens_l4.encode(TEXTS, progress=False))


@pytest.fixture(scope="module")
def b15_rows(blocks15, images) -> torch.Tensor:
    return torch.from_numpy(blocks15.encode(images))


def test_names_are_registered_and_map_towers_to_encoders() -> None:
    names = list_encoders("*.*")
    assert "minilm.tokens-l4" in names["text"] and "minilm.tokens-l0" in names["text"]
    assert "efficientnet-lite0.blocks-15" in names["image"]
    assert tower_encoder("minilm-top2") == "minilm.tokens-l4"
    assert tower_encoder("efficientnet-top1") == "efficientnet-lite0.blocks-15"
    assert tower_encoder("mlp") is None
    with pytest.raises(ValueError, match="unknown tower"):
        tower_encoder("bert-top2")
    with pytest.raises(ValueError, match="6 layers"):
        tower_encoder("minilm-top7")


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


def test_efficientnet_split_reproduces_the_pooled_features(
    images, efficientnet, blocks15, b15_rows
) -> None:
    full = efficientnet.encode(images)
    assert b15_rows.shape == (2, 192 * 7 * 7) and blocks15.map_shape == (192, 7, 7)
    head = EfficientNetTopHead(1, out_dim=8).train()  # BN stays in eval mode while training
    with torch.no_grad():
        out = head.backbone(b15_rows).numpy()  # the last block has no skip: no drop connect
    np.testing.assert_allclose(out, full, atol=1e-4, rtol=1e-5)


def test_eval_chunks_give_the_same_rows(b15_rows) -> None:
    top = EfficientNetTop(1).eval()
    rows = b15_rows.repeat(3, 1)
    with torch.no_grad():
        whole = top._forward(rows)
        import xmodal.models.backbone_heads as bh

        old, bh.EVAL_CHUNK = bh.EVAL_CHUNK, 2
        try:
            chunked = top(rows)
        finally:
            bh.EVAL_CHUNK = old
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_gradients_reach_the_top_layers_and_nothing_frozen(tokens_l4, l4_rows) -> None:
    head = MiniLMTopHead(2, out_dim=8, lr_scale=0.1)
    rows = l4_rows.clone().requires_grad_(True)
    head(rows).square().sum().backward()
    assert rows.grad is not None  # flows back to the cut (the inputs), which nothing trains
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the encoder is frozen: its model has no trainable parameter
    assert not any(p.requires_grad for p in tokens_l4.model.parameters())
    # learning-rate groups: backbone at lr * 0.1, projection at lr
    groups = head.parameter_groups(1e-3)
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3])
    n_backbone = sum(1 for _ in head.backbone.parameters())
    assert len(groups[0]["params"]) == n_backbone
    assert len(groups[1]["params"]) == sum(1 for _ in head.projection.parameters())


def test_zero_lr_scale_freezes_the_backbone(b15_rows) -> None:
    head = EfficientNetTopHead(1, out_dim=8, lr_scale=0.0)
    before = {k: v.clone() for k, v in head.backbone.state_dict().items()}
    x = b15_rows
    opt = torch.optim.AdamW(head.parameter_groups(1e-2))
    head(x).square().sum().backward()
    opt.step()
    after = head.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats too (eval mode)
    assert not any(p.requires_grad for p in head.backbone.parameters())


def test_param_groups_default_is_one_group() -> None:
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert lr_scale(a.weight) == 1.0
    groups = param_groups([*a.parameters(), *b.parameters()], lr=0.5)
    assert len(groups) == 1 and groups[0]["lr"] == 0.5 and len(groups[0]["params"]) == 4
    set_lr_scale(b, 0.2)
    groups = param_groups([*a.parameters(), *b.parameters()], lr=0.5)
    assert [(len(g["params"]), g["lr"]) for g in groups] == [(2, 0.5), (2, pytest.approx(0.1))]
    with pytest.raises(ValueError, match="lr scale"):
        set_lr_scale(a, -1.0)


def test_build_tower_checks_the_feature_width() -> None:
    assert isinstance(build_tower("mlp", 12, 4), ProjectionHead)
    with pytest.raises(ValueError, match=r"efficientnet-lite0\.blocks-15"):
        build_tower("efficientnet-top1", 1280, 4)
    with pytest.raises(ValueError, match=r"minilm\.tokens-l5"):
        build_tower("minilm-top1", 383, 4)
    with pytest.raises(ValueError, match="unknown tower"):
        build_tower("resnet", 16, 4)


def test_towers_train_through_the_trainer_in_a_wrapped_method(l4_rows, b15_rows) -> None:
    text = torch.cat([l4_rows, l4_rows[:1]]).numpy()
    pairs = PairedFeatures(b15_rows.numpy(), text, np.array([0, 1, 0, 1]))
    torch.manual_seed(0)
    method = build_method(
        "cusa(infonce)",
        pairs.image.shape[1],
        pairs.text.shape[1],
        image_tower="efficientnet-top1",
        text_tower="minilm-top1",
        tower_lr_scale=0.5,
        embed_dim=8,
        hidden=[],
        uni_head="none",
    )
    base = method.base
    assert isinstance(base.image_head, EfficientNetTopHead)
    assert isinstance(base.text_head, MiniLMTopHead)
    start = {k: v.clone() for k, v in base.text_head.backbone.state_dict().items()}
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, progress=False, device="cpu", patience=0)
    result = Trainer(method, cfg).fit(pairs, pairs)
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["loss"])
    moved = [not torch.equal(start[k], v) for k, v in base.text_head.backbone.state_dict().items()]
    assert any(moved)  # the copied MiniLM layer was trained
    assert method.embed_text(torch.from_numpy(pairs.text)).shape == (4, 8)


def test_a_trained_tower_survives_a_state_dict_round_trip(l4_rows) -> None:
    options = dict(text_tower="minilm-top1", embed_dim=8, hidden=[])
    method = build_method("vse", 16, l4_rows.shape[1], **options)
    with torch.no_grad():
        for p in method.text_head.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    again = build_method("vse", 16, l4_rows.shape[1], **options)
    again.load_state_dict(method.state_dict())
    method.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again.embed_text(l4_rows), method.embed_text(l4_rows))


def test_probe_fraction_trains_the_projections_first() -> None:
    method = build_method(
        "infonce", 16, 4 * 384, text_tower="minilm-top1", tower_probe_fraction=0.25, hidden=[]
    )
    probe, main = method.stages()
    backbone = {id(p) for p in method.text_head.backbone.parameters()}
    assert (probe.name, probe.epoch_fraction, main.name, main.epoch_fraction) == (
        "probe",
        0.25,
        "main",
        0.75,
    )
    assert backbone and not backbone & {id(p) for p in probe.parameters}
    assert backbone <= {id(p) for p in main.parameters}
    assert len(main.parameters) == len(list(method.parameters()))
    assert len(build_method("infonce", 16, 12, tower_probe_fraction=0.5).stages()) == 1
    with pytest.raises(ValueError, match="tower_probe_fraction"):
        build_method("infonce", 16, 12, tower_probe_fraction=1.0)

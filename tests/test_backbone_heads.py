"""Backbone-top heads (towers): gradients, learning-rate groups, the trainer, checkpoints.

Inputs are synthetic intermediate features of the right shapes (token rows with zero padding at
the end; 7x7 feature maps); that the heads reassemble the real encoders exactly is tested in
``test_encoders_intermediate.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xmodal.models.backbone_heads as bh
from xmodal.methods import build_method
from xmodal.models import (
    EfficientNetTopHead,
    MiniLMTopHead,
    ProjectionHead,
    build_tower,
    lr_scale,
    param_groups,
    set_lr_scale,
)
from xmodal.models.backbone_heads import EfficientNetTop, MiniLMTop
from xmodal.training import PairedFeatures, TrainConfig, Trainer


def token_rows(lengths: list[int], max_tokens: int = 8, seed: int = 0) -> torch.Tensor:
    """``[n, max_tokens * 384]`` rows: ``lengths[i]`` LayerNorm-like tokens, then zeros."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(lengths), max_tokens, 384)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, 384, generator=g)
    return x.flatten(1)


def feature_maps(n: int, seed: int = 0) -> torch.Tensor:
    """``[n, 192 * 7 * 7]`` non-negative maps, like the blocks' outputs in scale."""
    return torch.randn(n, 192 * 49, generator=torch.Generator().manual_seed(seed)).relu()


def test_padding_does_not_change_a_text(tmp_path) -> None:
    top = MiniLMTop(1).eval()
    rows = token_rows([3, 8, 5])
    with torch.no_grad():
        together = top(rows)
        alone = torch.cat([top(rows[i : i + 1]) for i in range(3)])
        # the same tokens padded to twice the length
        longer = torch.cat([rows.view(3, 8, 384), torch.zeros(3, 8, 384)], dim=1).flatten(1)
        padded = top(longer)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded, together, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.norm(dim=1), torch.ones(3))


def test_eval_chunks_give_the_same_rows(monkeypatch) -> None:
    top = EfficientNetTop(1).eval()
    rows = feature_maps(5)
    with torch.no_grad():
        whole = top._forward(rows)
        monkeypatch.setattr(bh, "EVAL_CHUNK", 2)
        chunked = top(rows)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_gradients_reach_the_top_layers_and_not_the_inputs() -> None:
    head = MiniLMTopHead(2, out_dim=8, lr_scale=0.1)
    rows = token_rows([3, 8, 5])
    head(rows).square().sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # learning-rate groups: backbone at lr * 0.1, projection at lr
    groups = head.parameter_groups(1e-3)
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3])
    assert len(groups[0]["params"]) == sum(1 for _ in head.backbone.parameters())
    assert len(groups[1]["params"]) == sum(1 for _ in head.projection.parameters())


def test_zero_lr_scale_freezes_the_backbone() -> None:
    head = EfficientNetTopHead(1, out_dim=8, lr_scale=0.0).train()
    before = {k: v.clone() for k, v in head.backbone.state_dict().items()}
    opt = torch.optim.AdamW(head.parameter_groups(1e-2))
    head(feature_maps(4)).square().sum().backward()
    opt.step()
    after = head.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics too
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
    assert build_tower("efficientnet-top0", 320 * 49, 4)(torch.rand(2, 320 * 49)).shape == (2, 4)
    with pytest.raises(ValueError, match=r"efficientnet-lite0\.blocks-15"):
        build_tower("efficientnet-top1", 1280, 4)
    with pytest.raises(ValueError, match=r"minilm\.tokens-l5"):
        build_tower("minilm-top1", 383, 4)
    with pytest.raises(ValueError, match="unknown tower"):
        build_tower("resnet", 16, 4)


def test_towers_train_through_the_trainer_in_a_wrapped_method() -> None:
    pairs = PairedFeatures(
        feature_maps(2).numpy(), token_rows([3, 8, 5, 4]).numpy(), np.array([0, 1, 0, 1])
    )
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


def test_a_trained_tower_survives_a_state_dict_round_trip() -> None:
    rows = token_rows([3, 8, 5])
    options = dict(text_tower="minilm-top1", embed_dim=8, hidden=[])
    method = build_method("vse", 16, rows.shape[1], **options)
    with torch.no_grad():
        for p in method.text_head.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    again = build_method("vse", 16, rows.shape[1], **options)
    again.load_state_dict(method.state_dict())
    method.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again.embed_text(rows), method.embed_text(rows))


def test_probe_fraction_trains_the_projections_first() -> None:
    method = build_method(
        "infonce", 16, 4 * 384, text_tower="minilm-top1", tower_probe_fraction=0.25, hidden=[]
    )
    probe, main = method.stages()
    backbone = {id(p) for p in method.text_head.backbone.parameters()}
    assert (probe.name, probe.epoch_fraction) == ("probe", 0.25)
    assert (main.name, main.epoch_fraction) == ("main", 0.75)
    assert backbone and not backbone & {id(p) for p in probe.parameters}
    assert backbone <= {id(p) for p in main.parameters}
    assert len(main.parameters) == len(list(method.parameters()))
    assert len(build_method("infonce", 16, 12, tower_probe_fraction=0.5).stages()) == 1
    with pytest.raises(ValueError, match="tower_probe_fraction"):
        build_method("infonce", 16, 12, tower_probe_fraction=1.0)

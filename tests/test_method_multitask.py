"""Multitask (correlation network + cross-modal autoencoder + binary transform) and the shared
hashing terms, on hand-checkable inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xmodal.embedding import embed_pairs, score_embeddings
from xmodal.methods import Batch, TrainingData, build_method, list_methods
from xmodal.methods.multitask import (
    CorrelationNetwork,
    Multitask,
    captions_by_image,
    correlation_bce,
    nearest_neighbours,
    variance_constraint,
)
from xmodal.models.hashing import (
    HashHead,
    binarize,
    cosine_target,
    quantization_loss,
    similarity_matching_loss,
)
from xmodal.training import PairedFeatures, TrainConfig, Trainer

SMALL = dict(
    embed_dim=8, hidden=[32], dropout=0.0, correlation_hidden=32, bits=16, hash_hidden=[16]
)


def structured(n_images: int = 40, per_image: int = 2, seed: int = 0) -> PairedFeatures:
    """Images in 12-d; captions are a fixed noisy linear map of their image (learnable)."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(123).normal(size=(12, 10))
    image = rng.normal(size=(n_images, 12)).astype(np.float32)
    t2i = np.repeat(np.arange(n_images), per_image)
    text = (image[t2i] @ mix + 0.3 * rng.normal(size=(len(t2i), 10))).astype(np.float32)
    return PairedFeatures(image, text, t2i)


def as_training(split: PairedFeatures) -> tuple[TrainingData, Batch]:
    data = split.to_training_data(torch.device("cpu"))
    t2i = data.text_to_image
    batch = Batch(data.image_features[t2i], data.text_features, t2i, torch.arange(len(t2i)))
    return data, batch


def prepared(seed: int = 0, **options: object) -> tuple[Multitask, TrainingData, Batch]:
    torch.manual_seed(seed)
    method = build_method("multitask", 12, 10, **{**SMALL, **options})
    data, batch = as_training(structured())
    method.prepare(data)
    return method, data, batch  # type: ignore[return-value]


# --- shared hashing terms ----------------------------------------------------------------------
def test_binarize_is_the_sign_with_zero_mapped_to_plus_one() -> None:
    out = binarize(torch.tensor([[0.3, -0.2, 0.0, -0.0]]))
    assert out.tolist() == [[1.0, -1.0, 1.0, 1.0]]


def test_hash_head_outputs_relaxed_codes_and_signs() -> None:
    head = HashHead(6, bits=16, hidden=(8,))
    x = torch.randn(5, 6)
    relaxed = head(x)
    assert relaxed.shape == (5, 16) and relaxed.abs().max() < 1
    assert torch.equal(head.codes(x), binarize(relaxed))
    with pytest.raises(ValueError, match="bits"):
        HashHead(6, bits=0)


def test_similarity_matching_is_zero_when_inner_products_equal_the_target() -> None:
    codes = torch.tensor([[1.0, 1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0]])
    # inner products / 4: diagonal 1, off-diagonal 0
    assert similarity_matching_loss(codes, codes, torch.eye(2)).item() == 0.0
    # a target of 0.5 off the diagonal: two entries off by 0.5 -> mean((0.5)^2 * 2 / 4)
    target = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    assert similarity_matching_loss(codes, codes, target).item() == pytest.approx(0.125)
    with pytest.raises(ValueError, match="target"):
        similarity_matching_loss(codes, codes, torch.eye(3))


def test_similarity_matching_gradient_moves_codes_towards_the_target() -> None:
    a = torch.tensor([[0.5, 0.5]], requires_grad=True)
    b = torch.tensor([[0.5, -0.5]])
    # inner / 2 = 0; target 1: descent should raise a·b, i.e. move a along b
    similarity_matching_loss(a, b, torch.ones(1, 1)).backward()
    step = -a.grad[0]
    assert torch.dot(step, b[0]) > 0


def test_quantization_is_zero_at_plus_minus_one_and_pushes_towards_it() -> None:
    assert quantization_loss(torch.tensor([[1.0, -1.0]])).item() == 0.0
    h = torch.tensor([[0.5, -0.25]], requires_grad=True)
    loss = quantization_loss(h)
    assert loss.item() == pytest.approx((0.25 + 0.5625) / 2)
    loss.backward()
    assert h.grad[0, 0] < 0 and h.grad[0, 1] > 0  # descent moves both away from 0


def test_cosine_target_with_and_without_centring() -> None:
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [3.0, 1.0]])
    raw = cosine_target(x, center=False)
    assert raw[0, 1].item() == pytest.approx(0.0)
    assert raw[0, 2].item() == pytest.approx(4 / (math.sqrt(2) * math.sqrt(10)))
    # centred: mean (5/3, 1/3); rows (-2/3, 2/3), (-2/3, -4/3), (4/3, 2/3)
    c = cosine_target(x)
    expected = (4 / 9 - 8 / 9) / (math.sqrt(8 / 9) * math.sqrt(20 / 9))
    assert c[0, 1].item() == pytest.approx(expected)
    # a shared offset disappears: shifting every row changes nothing once centred
    assert torch.allclose(cosine_target(x + 10.0), c, atol=1e-5)


# --- pure multitask functions ------------------------------------------------------------------
def test_nearest_neighbours_matches_a_brute_force_reference_and_excludes_self() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5)).astype(np.float32)
    got = nearest_neighbours(torch.tensor(x), k=3, chunk_size=7).numpy()
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    expected = np.argsort(-sim, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(got, expected)
    assert nearest_neighbours(torch.tensor(x[:3]), k=5).shape == (3, 2)  # clamped to n - 1


def test_nearest_neighbours_hand_example() -> None:
    # directions at 0°, 10°, 90°, 100°: the nearest of each is its 10° partner
    angles = np.deg2rad([0.0, 10.0, 90.0, 100.0])
    x = torch.tensor(np.c_[np.cos(angles), np.sin(angles)], dtype=torch.float32)
    assert nearest_neighbours(x, k=1)[:, 0].tolist() == [1, 0, 3, 2]


def test_captions_by_image_lists_each_images_captions() -> None:
    t2i = torch.tensor([2, 0, 2, 1, 0, 2])
    order, offsets, counts = captions_by_image(t2i, n_images=4)
    assert counts.tolist() == [2, 1, 3, 0]
    lists = [order[offsets[i] : offsets[i] + counts[i]].tolist() for i in range(4)]
    assert lists == [[1, 4], [3], [0, 2, 5], []]


def test_correlation_bce_hand_values_and_gradient_direction() -> None:
    zero = torch.zeros(3)
    assert correlation_bce(zero, zero).item() == pytest.approx(math.log(2))
    assert correlation_bce(zero, zero[:0]).item() == pytest.approx(math.log(2) / 2)
    rel = torch.zeros(2, requires_grad=True)
    unrel = torch.zeros(2, requires_grad=True)
    correlation_bce(rel, unrel).backward()
    assert (rel.grad < 0).all() and (unrel.grad > 0).all()  # descent: related up, unrelated down
    confident = correlation_bce(torch.full((2,), 20.0), torch.full((2,), -20.0))
    assert confident.item() < 1e-8


def test_variance_constraint_is_maximal_for_collapsed_codes_and_zero_when_spread() -> None:
    collapsed = torch.ones(5, 4)
    assert variance_constraint(collapsed, 0.04).item() == pytest.approx(0.04**2)
    # orthogonal codes: S = I (4x4): mean 1/4, population variance 1/4 - 1/16 = 0.1875 > 0.04
    assert variance_constraint(torch.eye(4), 0.04).item() == 0.0
    # in between, the hand formula
    codes = torch.tensor([[1.0, 0.0], [1.0, 0.2]])
    s = torch.nn.functional.normalize(codes, dim=1)
    var = (s @ s.T).var(unbiased=False).item()
    assert variance_constraint(codes, 0.04).item() == pytest.approx((0.04 - var) ** 2)


def test_variance_constraint_gradient_spreads_nearly_collapsed_codes() -> None:
    g = torch.Generator().manual_seed(0)
    codes = (torch.ones(6, 4) + 0.05 * torch.randn(6, 4, generator=g)).requires_grad_()
    before = variance_constraint(codes)
    before.backward()
    with torch.no_grad():
        after = variance_constraint(codes - 0.5 * codes.grad / codes.grad.norm())
    assert after < before


def test_frozen_correlation_network_passes_gradient_to_inputs_only() -> None:
    torch.manual_seed(0)
    net = CorrelationNetwork(6, 5, hidden=8, dropout=0.5).train()
    x = torch.randn(4, 6, requires_grad=True)
    y = torch.randn(4, 5)
    out = net(x, y, frozen=True)
    assert torch.equal(out, net(x, y, frozen=True))  # no dropout when frozen
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    net.eval()
    assert torch.allclose(net(x, y), out)


# --- the method --------------------------------------------------------------------------------
def test_registered_and_config_is_validated() -> None:
    assert "multitask" in list_methods()
    with pytest.raises(ValueError, match="bits"):
        build_method("multitask", 12, 10, bits=0)
    with pytest.raises(ValueError, match="correlation_fraction"):
        build_method("multitask", 12, 10, correlation_fraction=1.0)


def test_prepare_builds_neighbourhoods_with_the_anchor_first() -> None:
    method, _, _ = prepared()
    hood = method._neighbourhood
    assert hood is not None and hood.shape == (40, 4)
    assert torch.equal(hood[:, 0], torch.arange(40))
    assert not (hood[:, 1:] == hood[:, :1]).any()


def test_stages_pretrain_the_correlation_network_then_train_the_rest() -> None:
    method, _, _ = prepared()
    first, main = method.stages()
    assert (first.name, first.select, main.name, main.select) == (
        "correlation",
        False,
        "main",
        True,
    )
    corr = {id(p) for p in method.correlation.parameters()}
    assert {id(p) for p in first.parameters} == corr
    assert not corr & {id(p) for p in main.parameters}
    assert len(first.parameters) + len(main.parameters) == len(list(method.parameters()))


def test_correlation_stage_needs_prepare_and_unknown_stage_is_an_error() -> None:
    torch.manual_seed(0)
    method = build_method("multitask", 12, 10, **SMALL)
    _, batch = as_training(structured())
    with pytest.raises(RuntimeError, match="prepare"):
        method.loss(batch, "correlation")
    assert torch.isfinite(method.loss(batch, "main")["loss"])  # main works without neighbours
    with pytest.raises(ValueError, match="unknown stage"):
        method.loss(batch, "hash")


def test_main_loss_leaves_the_correlation_network_and_keeps_hashing_detached() -> None:
    method, _, batch = prepared()
    terms = method.loss(batch, "main")
    assert {"consistency", "correlation", "variance", "hash", "quantization"} <= set(terms)
    terms["loss"].backward()
    assert all(p.grad is None for p in method.correlation.parameters())
    method.zero_grad(set_to_none=True)
    method.loss(batch, "main")["hash"].backward()
    assert all(p.grad is None for p in method.image_encoder.parameters())
    assert any(p.grad is not None for p in method.hash_head.parameters())


def test_literal_variant_scores_decoded_pairs_only_as_related() -> None:
    method, _, batch = prepared(correlation_negatives=False)
    torch.manual_seed(1)
    c_img, c_txt = method.codes(batch.image, batch.text)
    related = torch.cat(
        [
            method.correlation(method.image_decoder(c_txt), batch.text, frozen=True),
            method.correlation(batch.image, method.text_decoder(c_img), frozen=True),
        ]
    )
    expected = torch.nn.functional.softplus(-related).mean() / 2
    assert method.loss(batch, "main")["correlation"].item() == pytest.approx(expected.item())


def test_both_stage_objectives_decrease_on_a_small_batch() -> None:
    method, _, batch = prepared()
    for stage in ("correlation", "main"):
        params = next(s.parameters for s in method.stages() if s.name == stage)
        opt = torch.optim.Adam(params, lr=5e-3)
        torch.manual_seed(0)
        first = method.loss(batch, stage)["loss"].item()
        for _ in range(40):
            opt.zero_grad()
            method.loss(batch, stage)["loss"].backward()
            opt.step()
        torch.manual_seed(0)
        assert method.loss(batch, stage)["loss"].item() < 0.8 * first, stage


def test_embeddings_are_unit_codes_and_hashes_are_signs() -> None:
    method, data, _ = prepared()
    method.eval()
    emb = method.embed_image(data.image_features)
    assert emb.shape == (40, 8) and torch.allclose(emb.norm(dim=1), torch.ones(40))
    codes = method.hash_text(data.text_features)
    assert codes.shape == (80, 16) and set(codes.unique().tolist()) <= {-1.0, 1.0}


def test_trainer_runs_the_schedule_and_learns_and_checkpoints_round_trip() -> None:
    train, val = structured(120, seed=0), structured(30, seed=1)
    torch.manual_seed(0)
    method = build_method("multitask", 12, 10, **SMALL)
    before = score_embeddings(embed_pairs(method, val))["rsum"]
    cfg = TrainConfig(epochs=10, batch_size=32, lr=3e-3, progress=False, device="cpu", patience=0)
    result = Trainer(method, cfg).fit(train, val)
    assert [h["stage"] for h in result.history] == ["correlation"] * 2 + ["main"] * 8
    assert result.best["rsum"] > before + 50
    fresh = build_method("multitask", 12, 10, **SMALL)
    fresh.load_state_dict(method.state_dict())
    np.testing.assert_allclose(embed_pairs(fresh, val).text, embed_pairs(method, val).text)

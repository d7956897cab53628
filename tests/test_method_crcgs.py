"""CRCGS: generators as teachers, label terms, contrastive and support-set terms, hashing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from xmodal.embedding import embed_pairs, score_embeddings
from xmodal.methods import Batch, TrainingData, build_method, list_methods
from xmodal.methods.crcgs import (
    CRCGS,
    guarded_neg_log,
    pairwise_label_likelihood,
    support_set_loss,
)
from xmodal.models.generators import Discriminator, FeatureGenerator, grad_reverse
from xmodal.training import PairedFeatures, TrainConfig, Trainer

SMALL = dict(embed_dim=16, hidden=[32], dropout=0.0, generator_hidden=32, bits=8, temperature=0.1)


def structured(
    n_images: int = 24, per_image: int = 2, seed: int = 0, labelled: bool = True
) -> PairedFeatures:
    """Four classes; images = class centre + noise; captions = noisy linear map of the image.

    Labels: the class, and for half the images a second, shared "odd" label (multi-label).
    """
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(7).normal(size=(4, 12))
    mix = np.random.default_rng(123).normal(size=(12, 10))
    cls = np.arange(n_images) % 4
    image = (centres[cls] + 0.5 * rng.normal(size=(n_images, 12))).astype(np.float32)
    t2i = np.repeat(np.arange(n_images), per_image)
    text = (image[t2i] @ mix + 0.3 * rng.normal(size=(len(t2i), 10))).astype(np.float32)
    labels = None
    if labelled:
        labels = np.zeros((n_images, 5), dtype=bool)
        labels[np.arange(n_images), cls] = True
        labels[::2, 4] = True
    return PairedFeatures(image, text, t2i, labels)


def as_training(split: PairedFeatures) -> tuple[TrainingData, Batch]:
    data = split.to_training_data(torch.device("cpu"))
    t2i = data.text_to_image
    labels = None if data.labels is None else data.labels[t2i]
    batch = Batch(data.image_features[t2i], data.text_features, t2i, torch.arange(len(t2i)), labels)
    return data, batch


def prepared(labelled: bool = True, **options: object) -> tuple[CRCGS, TrainingData, Batch]:
    torch.manual_seed(0)
    method = build_method("crcgs", 12, 10, **{**SMALL, **options})
    data, batch = as_training(structured(labelled=labelled))
    method.prepare(data)
    return method, data, batch  # type: ignore[return-value]


# --- pure terms --------------------------------------------------------------------------------
def test_pairwise_label_likelihood_hand_values() -> None:
    a = torch.tensor([[1.0, 0.0]])
    same, opposite = a.clone(), -a
    sim, dis = torch.ones(1, 1, dtype=torch.bool), torch.zeros(1, 1, dtype=torch.bool)
    # θ = cos / 2
    assert pairwise_label_likelihood(a, same, sim).item() == pytest.approx(
        math.log(1 + math.exp(0.5)) - 0.5
    )
    assert pairwise_label_likelihood(a, same, dis).item() == pytest.approx(
        math.log(1 + math.exp(0.5))
    )
    assert pairwise_label_likelihood(a, opposite, dis).item() == pytest.approx(
        math.log(1 + math.exp(-0.5))
    )
    # minimal where it should be: similar pairs aligned, dissimilar pairs opposite
    assert pairwise_label_likelihood(a, same, sim) < pairwise_label_likelihood(a, opposite, sim)
    assert pairwise_label_likelihood(a, opposite, dis) < pairwise_label_likelihood(a, same, dis)


@pytest.mark.parametrize("similar", [True, False])
def test_pairwise_label_likelihood_gradient_aligns_similar_and_separates_dissimilar(
    similar: bool,
) -> None:
    a = torch.tensor([[1.0, 0.2]], requires_grad=True)
    b = torch.tensor([[0.3, 1.0]])
    s = torch.full((1, 1), similar)
    pairwise_label_likelihood(a, b, s).backward()
    with torch.no_grad():
        moved = F.cosine_similarity(a - 0.1 * a.grad, b).item()
        start = F.cosine_similarity(a, b).item()
    assert (moved > start) == similar


def test_guarded_neg_log_is_minus_log_above_eps_and_linear_below() -> None:
    x = torch.tensor([1.0, 0.5, 1e-4])
    assert torch.allclose(guarded_neg_log(x), -torch.log(x))
    eps = 1e-4
    below = torch.tensor([0.0, -1.0], requires_grad=True)
    out = guarded_neg_log(below, eps)
    expected = torch.tensor([-math.log(eps) + 1.0, -math.log(eps) + (eps + 1) / eps])
    assert torch.allclose(out, expected) and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.allclose(below.grad, torch.full((2,), -1 / eps))  # still pushes x up


def test_support_set_is_zero_when_each_row_matches_its_only_partner() -> None:
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    shared = torch.eye(2)
    assert support_set_loss(f, 3 * f, shared, temperature=0.1).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_support_set_hand_example_weights_by_shared_labels_and_softmax() -> None:
    f = torch.tensor([[1.0, 0.0]])
    others = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 0.0]])
    shared = torch.tensor([[2.0, 1.0, 0.0]])  # the third shares nothing: left out
    t = 0.5
    cos = np.array([1 / math.sqrt(2), 1 / math.sqrt(2)])
    w = np.array([2.0, 1.0]) * np.exp(cos / t)
    w /= w.sum()
    unit = others[:2].numpy() / math.sqrt(2)
    sup = w @ unit
    expected = -math.log(sup[0] / np.linalg.norm(sup))
    assert support_set_loss(f, others, shared, t).item() == pytest.approx(expected, rel=1e-5)


def test_support_set_skips_rows_without_partners_and_guards_negative_cosines() -> None:
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    others = torch.tensor([[-1.0, 0.0], [5.0, 5.0]])
    # row 0 only "shares" with an opposite feature: mean cos = -1 -> guarded, finite
    loss = support_set_loss(f, others, torch.tensor([[1.0, 0.0], [0.0, 0.0]]), 0.1)
    assert torch.isfinite(loss) and loss.item() > -math.log(1e-4)
    assert support_set_loss(f, others, torch.zeros(2, 2), 0.1).item() == 0.0
    with pytest.raises(ValueError, match="shared"):
        support_set_loss(f, others, torch.zeros(3, 2), 0.1)


def test_support_set_gradient_moves_features_towards_their_support() -> None:
    f = torch.tensor([[1.0, 0.3]], requires_grad=True)
    others = torch.tensor([[0.2, 1.0]])
    support_set_loss(f, others, torch.ones(1, 1), 0.1).backward()
    with torch.no_grad():
        assert F.cosine_similarity(f - 0.1 * f.grad, others) > F.cosine_similarity(f, others)


def test_grad_reverse_is_identity_forward_and_negates_backward() -> None:
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = grad_reverse(x, scale=0.5)
    assert torch.equal(y, x)
    (y * torch.tensor([3.0, 4.0])).sum().backward()
    assert x.grad.tolist() == [-1.5, -2.0]


def test_generator_and_discriminator_shapes() -> None:
    assert FeatureGenerator(12, 10, hidden=8)(torch.randn(3, 12)).shape == (3, 10)
    assert Discriminator(16, hidden=(4,))(torch.randn(5, 16)).shape == (5,)


# --- the method --------------------------------------------------------------------------------
def test_registered_and_config_is_validated() -> None:
    assert "crcgs" in list_methods()
    with pytest.raises(ValueError, match="temperature"):
        build_method("crcgs", 12, 10, temperature=0.0)
    with pytest.raises(ValueError, match="generated_weight"):
        build_method("crcgs", 12, 10, generated_weight=1.5)


def test_prepare_chooses_labels_or_instance_classes() -> None:
    method, _, _ = prepared(labelled=True)
    assert method.label_mode == "labels" and method.classifier.out_features == 5
    method, _, _ = prepared(labelled=False)
    assert method.label_mode == "instance" and method.classifier.out_features == 24
    # an all-zero label matrix is no labels at all
    split = structured(labelled=True)
    empty = PairedFeatures(split.image, split.text, split.text_to_image, np.zeros((24, 5), bool))
    m = build_method("crcgs", 12, 10, **SMALL)
    m.prepare(empty.to_training_data(torch.device("cpu")))
    assert m.label_mode == "instance"
    # too many instances for a classifier: the classifier terms are skipped, the rest works
    method, _, batch = prepared(labelled=False, max_instance_classes=10)
    terms = method.loss(batch)
    assert method.classifier is None and terms["label"].item() == 0.0
    assert torch.isfinite(terms["loss"])


def test_loss_needs_prepare_and_names_unknown_stages() -> None:
    method = build_method("crcgs", 12, 10, **SMALL)
    _, batch = as_training(structured())
    with pytest.raises(RuntimeError, match="prepare"):
        method.loss(batch)
    assert torch.isfinite(method.loss(batch, "generators")["loss"])
    with pytest.raises(ValueError, match="unknown stage"):
        method.loss(batch, "hash")


def test_instance_mode_uses_same_image_as_the_label_relation() -> None:
    method, _, batch = prepared(labelled=False)
    targets, shared = method._labels(batch)
    assert torch.equal(shared > 0, batch.positives())
    assert torch.equal(targets.argmax(1), batch.image_index)


def test_stages_pretrain_generators_then_train_everything_else() -> None:
    method, _, _ = prepared()
    gen, main = method.stages()
    assert (gen.name, gen.select, main.name, main.select) == ("generators", False, "main", True)
    gen_ids = {id(p) for p in [*method.gen_i2t.parameters(), *method.gen_t2i.parameters()]}
    assert {id(p) for p in gen.parameters} == gen_ids
    assert not gen_ids & {id(p) for p in main.parameters}
    assert len(gen.parameters) + len(main.parameters) == len(list(method.parameters()))


def test_main_loss_freezes_teachers_and_keeps_the_binary_layer_detached() -> None:
    method, _, batch = prepared()
    terms = method.loss(batch)
    expected = {"label", "pairwise", "paired", "teacher", "adversarial", "contrastive", "support"}
    assert expected | {"hash", "hash_label", "quantization"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    assert all(p.grad is None for p in method.gen_i2t.parameters())
    method.zero_grad(set_to_none=True)
    terms = method.loss(batch)
    (terms["hash"] + terms["hash_label"]).backward()
    assert all(p.grad is None for p in method.image_student.parameters())
    assert method.hash_head.net[0].weight.grad is not None


def test_adversarial_term_trains_discriminators_and_reverses_the_students_gradient() -> None:
    method, _, batch = prepared()
    u = method.student_image(batch.image).detach().requires_grad_()
    v = method.student_text(batch.text).detach()
    t_img, t_txt = (t.detach() for t in method.teacher_features(batch.image, batch.text))
    adv = method._adversarial(u, v, t_img, t_txt)
    adv.backward()
    reversed_grad = u.grad.clone()
    # the same loss without reversal: the gradient is the exact opposite
    u.grad = None
    real = torch.cat([u, v])
    b = u.shape[0]
    plain = (
        F.binary_cross_entropy_with_logits(
            method.modality_discriminator(real), torch.cat([torch.zeros(b), torch.ones(b)])
        )
        + F.binary_cross_entropy_with_logits(
            method.source_discriminator(torch.cat([real, t_img, t_txt])),
            torch.cat([torch.zeros(2 * b), torch.ones(2 * b)]),
        )
    ) / 2
    assert plain.item() == pytest.approx(adv.item())
    plain.backward()
    assert torch.allclose(reversed_grad, -u.grad, atol=1e-7)
    assert method.modality_discriminator.net[0].weight.grad is not None


@pytest.mark.parametrize("labelled", [True, False])
def test_objectives_decrease_on_a_small_batch(labelled: bool) -> None:
    method, _, batch = prepared(labelled=labelled)
    for stage in ("generators", "main"):
        params = next(s.parameters for s in method.stages() if s.name == stage)
        opt = torch.optim.Adam(params, lr=3e-3)
        first = method.loss(batch, stage)["loss"].item()
        for _ in range(30):
            opt.zero_grad()
            method.loss(batch, stage)["loss"].backward()
            opt.step()
        assert method.loss(batch, stage)["loss"].item() < 0.8 * first, stage


def test_generated_weight_fuses_the_teachers_view_into_embeddings() -> None:
    method, data, _ = prepared(generated_weight=0.0)
    method.eval()
    x = data.image_features[:5]
    student = F.normalize(method.student_image(x), dim=1)
    assert torch.allclose(method.embed_image(x), student)
    method.config.generated_weight = 0.5
    gen = F.normalize(method.student_text(method.gen_i2t(x)), dim=1)
    assert torch.allclose(method.embed_image(x), F.normalize(student + gen, dim=1), atol=1e-6)


def test_checkpoint_loads_into_a_fresh_unprepared_method_and_hashes_are_signs() -> None:
    method, data, _ = prepared()
    method.eval()
    fresh = build_method("crcgs", 12, 10, **SMALL)
    fresh.load_state_dict(method.state_dict())  # classifiers resized from the checkpoint
    fresh.eval()
    assert fresh.classifier.out_features == 5
    x = data.text_features[:7]
    assert torch.allclose(fresh.embed_text(x), method.embed_text(x))
    codes = fresh.hash_text(x)
    assert codes.shape == (7, 8) and set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(codes, method.hash_text(x))


def test_trainer_runs_the_schedule_and_learns() -> None:
    train, val = structured(96, seed=0), structured(24, seed=1)
    torch.manual_seed(0)
    method = build_method("crcgs", 12, 10, **SMALL)
    before = score_embeddings(embed_pairs(method, val))
    cfg = TrainConfig(
        epochs=10,
        batch_size=32,
        lr=3e-3,
        progress=False,
        device="cpu",
        patience=0,
        select_metric="map",
    )
    result = Trainer(method, cfg).fit(train, val)
    assert [h["stage"] for h in result.history] == ["generators"] * 2 + ["main"] * 8
    assert result.best["map_i2t"] > before["map_i2t"] + 0.1
    assert method.extra_state_for_run() == {"label_mode": "labels", "classes": 5}

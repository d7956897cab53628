"""CUSA (cross-modal and uni-modal soft-label alignment) on hand-checkable inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmodal.methods import Batch, build_method, config_to_dict
from xmodal.methods.cusa import (
    CUSA,
    BoundedTemperature,
    cosine_similarity_matrix,
    first_occurrences,
    soft_label_kl,
)
from xmodal.training import PairedFeatures, TrainConfig, Trainer

SMALL = dict(embed_dim=8, hidden=[16], dropout=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _kl_reference(student: np.ndarray, teacher: np.ndarray) -> float:
    """Mean over rows of sum_j p_j log(p_j / q_j), p = softmax(teacher), q = softmax(student)."""

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = softmax(teacher.astype(np.float64)), softmax(student.astype(np.float64))
    return float((p * np.log(p / q)).sum(axis=1).mean())


def _batch(t2i: list[int], seed: int = 0, image_dim: int = 12, text_dim: int = 10) -> Batch:
    g = torch.Generator().manual_seed(seed)
    idx = torch.tensor(t2i)
    images = torch.randn(int(idx.max()) + 1, image_dim, generator=g)
    text = torch.randn(len(t2i), text_dim, generator=g)
    return Batch(images[idx], text, idx, torch.arange(len(t2i)))


# --- the KL term ------------------------------------------------------------------------------
def test_kl_is_zero_exactly_when_the_softmaxes_are_equal() -> None:
    teacher = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    shifted = teacher + torch.tensor([[4.0], [-2.0]])  # same softmax, row by row
    assert soft_label_kl(shifted, teacher).item() == pytest.approx(0.0, abs=1e-7)
    other = teacher.flip(1)
    assert soft_label_kl(other, teacher).item() > 0.1


def test_kl_matches_the_formula_with_the_teacher_as_target() -> None:
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    assert soft_label_kl(s, t).item() == pytest.approx(
        _kl_reference(s.numpy(), t.numpy()), rel=1e-5
    )
    # KL(teacher || student), not KL(student || teacher)
    assert soft_label_kl(s, t).item() != pytest.approx(
        _kl_reference(t.numpy(), s.numpy()), rel=1e-3
    )


def test_kl_gradient_moves_the_student_toward_the_teacher_and_spares_the_teacher() -> None:
    student = torch.zeros(1, 3, requires_grad=True)
    teacher = torch.tensor([[2.0, 0.0, 0.0]], requires_grad=True)
    soft_label_kl(student, teacher).backward()
    p = torch.softmax(teacher.detach(), 1)
    # d/ds KL = softmax(s) - p (one row, batchmean): descent raises the logit the teacher favours
    assert torch.allclose(student.grad, torch.full((1, 3), 1 / 3) - p, atol=1e-6)
    assert student.grad[0, 0] < 0 < student.grad[0, 1]
    assert teacher.grad is None


def test_kl_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        soft_label_kl(torch.zeros(2, 3), torch.zeros(3, 2))


# --- helpers ----------------------------------------------------------------------------------
def test_first_occurrences_and_cosines() -> None:
    assert first_occurrences(torch.tensor([4, 2, 4, 7, 2])).tolist() == [0, 1, 3]
    assert first_occurrences(torch.tensor([3, 3, 3])).tolist() == [0]
    a = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, -2.0]])
    ref = np.array([[1.0, 0.6, -0.8], [0.6, 1.0, 0.0], [-0.8, 0.0, 1.0]])
    np.testing.assert_allclose(cosine_similarity_matrix(torch.tensor(a)).numpy(), ref, atol=1e-6)


def test_bounded_temperature_starts_at_init_and_never_leaves_its_range() -> None:
    t = BoundedTemperature(0.45, 0.1, 0.99)
    assert t().item() == pytest.approx(0.45, abs=1e-6)
    with torch.no_grad():
        t.theta.fill_(1e3)
    assert t().item() == pytest.approx(0.99)
    with torch.no_grad():
        t.theta.fill_(-1e3)
    assert t().item() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="low <= init <= high"):
        BoundedTemperature(0.05, 0.1, 0.99)


# --- the method -------------------------------------------------------------------------------
def test_registry_builds_wrapped_names_and_checks_options() -> None:
    m = build_method("cusa(infonce)", 12, 10, **SMALL, base_options={"temperature": 0.05})
    assert isinstance(m, CUSA) and m.base.name == "infonce"
    assert m.base.temperature == pytest.approx(0.05)
    assert build_method("cusa(vse)", 12, 10, **SMALL).base.name == "vse"
    assert build_method("cusa", 12, 10, **SMALL).base.name == "infonce"  # default base
    with pytest.raises(ValueError, match="shared options"):
        build_method("cusa(vse)", 12, 10, base_options={"embed_dim": 4})
    with pytest.raises(ValueError, match="closed-form"):
        build_method("cusa(cca)", 12, 10)
    with pytest.raises(ValueError, match="cannot wrap itself"):
        build_method("cusa(cusa)", 12, 10)
    with pytest.raises(ValueError, match="uni_head"):
        build_method("cusa(vse)", 12, 10, uni_head="mlp")


def test_csa_and_usa_equal_the_formula_on_the_methods_own_embeddings() -> None:
    torch.manual_seed(0)
    m = build_method("cusa(vse)", 12, 10, **SMALL)
    batch = _batch([0, 1, 2, 3, 4])  # no duplicate image
    terms = m.soft_label_terms(m.base(batch), batch)
    with torch.no_grad():
        img, txt = m.base.embed_image(batch.image).numpy(), m.base.embed_text(batch.text).numpy()
        ui = m.embed_image_unimodal(batch.image).numpy()
        ut = m.embed_text_unimodal(batch.text).numpy()
    xi = batch.image.numpy() / np.linalg.norm(batch.image.numpy(), axis=1, keepdims=True)
    xt = batch.text.numpy() / np.linalg.norm(batch.text.numpy(), axis=1, keepdims=True)
    s_ii, s_tt = xi @ xi.T, xt @ xt.T  # teacher = cosine of the frozen inputs, T = 1
    cross = img @ txt.T / 0.45  # τ starts at 0.45
    assert terms["csa_i2t"].item() == pytest.approx(_kl_reference(cross, s_ii), rel=1e-4)
    assert terms["csa_t2i"].item() == pytest.approx(_kl_reference(cross.T, s_tt), rel=1e-4)
    assert terms["usa_i2i"].item() == pytest.approx(_kl_reference(ui @ ui.T / 0.45, s_ii), rel=1e-4)
    assert terms["usa_t2t"].item() == pytest.approx(_kl_reference(ut @ ut.T / 0.45, s_tt), rel=1e-4)
    # without duplicates the published (no dedupe) behaviour is the same
    m.config.dedupe_images = False
    again = m.soft_label_terms(m.base(batch), batch)
    assert all(torch.allclose(terms[k], again[k]) for k in terms)


@pytest.mark.parametrize("mode", ["add", "dot"])
def test_published_cross_teacher_modes(mode: str) -> None:
    torch.manual_seed(0)
    m = build_method("cusa(vse)", 12, 10, **SMALL, cross_teacher=mode, teacher_temperature=0.5)
    batch = _batch([0, 1, 2, 3])
    batch.image[:, :6] = batch.text[:, :6] = 0.0  # so that some cosines are negative
    batch.image[:, 6:] = batch.image[:, 6:].abs()
    terms = m.soft_label_terms(m.base(batch), batch)
    with torch.no_grad():
        img, txt = m.base.embed_image(batch.image).numpy(), m.base.embed_text(batch.text).numpy()
    xi = batch.image.numpy() / np.linalg.norm(batch.image.numpy(), axis=1, keepdims=True)
    xt = batch.text.numpy() / np.linalg.norm(batch.text.numpy(), axis=1, keepdims=True)
    s_ii, s_tt = xi @ xi.T, xt @ xt.T
    if mode == "add":
        teacher = (s_ii + s_tt) / 2
    else:
        teacher = np.sqrt(np.clip(s_ii, 0, None) * np.clip(s_tt, 0, None))
    cross = img @ txt.T / 0.45
    assert terms["csa_i2t"].item() == pytest.approx(_kl_reference(cross, teacher / 0.5), rel=1e-4)
    assert terms["csa_t2i"].item() == pytest.approx(_kl_reference(cross.T, teacher / 0.5), rel=1e-4)


def test_duplicate_images_count_once_and_share_teacher_mass() -> None:
    torch.manual_seed(0)
    m = build_method("cusa(infonce)", 12, 10, **SMALL)
    batch = _batch([0, 1, 0, 2])  # captions 0 and 2 describe image 0
    terms = m.soft_label_terms(m.base(batch), batch)
    with torch.no_grad():
        img, txt = m.base.embed_image(batch.image).numpy(), m.base.embed_text(batch.text).numpy()
    xi = batch.image.numpy() / np.linalg.norm(batch.image.numpy(), axis=1, keepdims=True)
    xt = batch.text.numpy() / np.linalg.norm(batch.text.numpy(), axis=1, keepdims=True)
    keep = [0, 1, 3]
    cross = img @ txt.T / 0.45
    s_ii = xi @ xi.T
    assert s_ii[0, 0] == pytest.approx(s_ii[0, 2])  # both captions of image 0: equal teacher mass
    assert terms["csa_i2t"].item() == pytest.approx(
        _kl_reference(cross[keep], s_ii[keep]), rel=1e-4
    )
    # text -> image: columns are the 3 distinct images; image 0's teacher entry averages the
    # text-teacher cosines to its two captions
    s_tt = xt @ xt.T
    t2i_teacher = np.stack([(s_tt[:, 0] + s_tt[:, 2]) / 2, s_tt[:, 1], s_tt[:, 3]], axis=1)
    ref = _kl_reference(cross.T[:, keep], t2i_teacher)
    assert terms["csa_t2i"].item() == pytest.approx(ref, rel=1e-4)
    m.config.dedupe_images = False
    assert m.soft_label_terms(m.base(batch), batch)["csa_i2t"].item() != pytest.approx(
        terms["csa_i2t"].item()
    )


def test_base_loss_is_unchanged_and_terms_are_added_with_their_weights() -> None:
    torch.manual_seed(0)
    m = build_method("cusa(infonce)", 12, 10, **SMALL, csa_weight=0.3, usa_weight=0.7)
    plain = build_method("infonce", 12, 10, **SMALL)
    plain.load_state_dict(m.base.state_dict())
    batch = _batch([0, 1, 2, 2, 3])
    terms = m.loss(batch)
    assert terms["base_loss"].item() == pytest.approx(plain.loss(batch)["loss"].item(), rel=1e-6)
    expected = terms["base_loss"] + 0.3 * terms["csa"] + 0.7 * terms["usa"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    m.config.base_loss_scale = "published"  # the published code's loss divides by the batch size
    expected = terms["base_loss"] / 5 + 0.3 * terms["csa"] + 0.7 * terms["usa"]
    assert m.loss(batch)["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_another_encoder_can_be_the_teacher_through_batch_extra() -> None:
    torch.manual_seed(0)
    m = build_method("cusa(vse)", 12, 10, **SMALL, teacher_image="teacher_image")
    batch = _batch([0, 1, 2, 3])
    with pytest.raises(ValueError, match="'teacher_image' are not in the batch"):
        m.soft_label_terms(m.base(batch), batch)
    # a teacher that sees images 0,1 as identical and 2,3 as identical
    batch.extra["teacher_image"] = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    terms = m.soft_label_terms(m.base(batch), batch)
    with torch.no_grad():
        img, txt = m.base.embed_image(batch.image).numpy(), m.base.embed_text(batch.text).numpy()
    teacher = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=float)
    ref = _kl_reference(img @ txt.T / 0.45, teacher)
    assert terms["csa_i2t"].item() == pytest.approx(ref, rel=1e-4)


def test_the_whole_objective_decreases_on_a_small_batch() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(16, 12, generator=g)
    t2i = torch.arange(16).repeat_interleave(2)
    text = images[t2i] @ torch.randn(12, 10, generator=g) + 0.1 * torch.randn(32, 10, generator=g)
    batch = Batch(images[t2i], text, t2i, torch.arange(32))
    for base in ("infonce", "vse"):
        m = build_method(f"cusa({base})", 12, 10, embed_dim=16, hidden=[32], dropout=0.0)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        first = m.loss(batch)
        for _ in range(60):
            opt.zero_grad()
            m.loss(batch)["loss"].backward()
            opt.step()
        last = m.loss(batch)
        assert last["loss"].item() < 0.5 * first["loss"].item()
        assert last["csa"].item() < first["csa"].item() and last["usa"].item() < first["usa"].item()


def test_trains_with_teacher_features_and_rebuilds_from_its_config() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(40, 12)).astype(np.float32)
    t2i = np.repeat(np.arange(40), 2)
    text = (image[t2i] @ rng.normal(size=(12, 10)) + 0.3 * rng.normal(size=(80, 10))).astype(
        np.float32
    )
    teacher = {"teacher_text": rng.normal(size=(80, 6)).astype(np.float32)}
    train = PairedFeatures(image, text, t2i, text_extra=teacher)
    m = build_method("cusa(vse)", 12, 10, **SMALL, teacher_text="teacher_text")
    result = Trainer(m, TrainConfig(epochs=2, batch_size=16, progress=False, device="cpu")).fit(
        train, PairedFeatures(image, text, t2i)
    )
    assert {"csa", "usa", "base_loss"} <= set(result.history[0])
    assert set(m.extra_state_for_run()) == {
        "cusa_temperature",
        "cusa_image_temperature",
        "cusa_text_temperature",
    }
    options = {k: v for k, v in config_to_dict(m.config).items() if k != "base"}
    rebuilt = build_method("cusa(vse)", 12, 10, **options)
    rebuilt.load_state_dict(m.state_dict())
    x = torch.as_tensor(image[:3])
    m.eval()
    rebuilt.eval()
    assert torch.allclose(rebuilt.embed_image(x), m.embed_image(x))

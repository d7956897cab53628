"""AEIR (transfer to an unpaired target domain) and the trainer's unpaired-data path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xmodal.methods import Batch, build_method
from xmodal.methods.aeir import (
    AEIR,
    DomainDiscriminator,
    domain_adversarial_loss,
    grad_reverse,
    pseudo_pair_triplet,
    ranking_consistency,
)
from xmodal.methods.infonce import InfoNCE
from xmodal.training import PairedFeatures, TrainConfig, Trainer, iterate_batches
from xmodal.training.data import UnpairedFeatures

SMALL = dict(embed_dim=8, hidden=[16], dropout=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = dict(epochs=2, batch_size=16, lr=3e-3, progress=False, device="cpu")


def _split(n_images: int, seed: int, shift: float = 0.0) -> PairedFeatures:
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(123).normal(size=(12, 10))
    image = (rng.normal(size=(n_images, 12)) + shift).astype(np.float32)
    t2i = np.repeat(np.arange(n_images), 2)
    text = (image[t2i] @ mix + 0.3 * rng.normal(size=(len(t2i), 10))).astype(np.float32)
    return PairedFeatures(image, text, t2i)


def _with_target(batch: Batch, n: int = 6, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    batch.target_image = torch.randn(n, batch.image.shape[1], generator=g) + 2.0
    batch.target_text = torch.randn(n + 1, batch.text.shape[1], generator=g) - 1.0
    return batch


def _source_batch(n_images: int = 8, seed: int = 0) -> Batch:
    data = _split(n_images, seed)
    t2i = torch.as_tensor(data.text_to_image)
    return Batch(
        torch.as_tensor(data.image)[t2i], torch.as_tensor(data.text), t2i, torch.arange(len(t2i))
    )


# --- gradient reversal and the discriminator --------------------------------------------------
def test_gradient_reversal_is_identity_forward_and_flips_the_gradient() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


def test_domain_loss_hand_values_and_accuracy() -> None:
    zero = torch.zeros(4)
    loss, acc = domain_adversarial_loss(zero, zero)
    assert loss.item() == pytest.approx(math.log(2))  # a discriminator at chance
    assert acc.item() == pytest.approx(0.5)  # logit 0 counts as "target"
    src, tgt = torch.tensor([2.0, -1.0]), torch.tensor([-3.0, -3.0])
    loss, acc = domain_adversarial_loss(src, tgt)
    ref = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(1.0))) / 2 / 2 + np.log1p(np.exp(-3.0)) / 2
    assert loss.item() == pytest.approx(ref, rel=1e-6)
    assert acc.item() == pytest.approx((0.5 + 1.0) / 2)


def test_reversed_adversarial_gradient_points_the_other_way() -> None:
    torch.manual_seed(0)
    disc = DomainDiscriminator(4, (8,))
    src, tgt = torch.randn(5, 4), torch.randn(5, 4) + 1
    grads = []
    for lam in (None, 1.0):
        s = src.clone().requires_grad_(True)
        feed = s if lam is None else grad_reverse(s, lam)
        domain_adversarial_loss(disc(feed), disc(tgt))[0].backward()
        grads.append(s.grad)
    # the heads get minus the gradient that would help the discriminator
    assert torch.allclose(grads[1], -grads[0]) and grads[0].abs().sum() > 0


# --- the structural term ----------------------------------------------------------------------
def test_ranking_consistency_is_zero_when_cross_modal_ranking_follows_uni_modal_one() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, generator=g)
    anchors = torch.randn(5, 4, generator=g)
    assert ranking_consistency(q, anchors, anchors, 0.1).item() == pytest.approx(0.0, abs=1e-6)
    assert ranking_consistency(q, anchors, anchors.flip(0), 0.1).item() > 0.1


def test_ranking_consistency_moves_only_the_query_toward_the_partner_of_its_neighbour() -> None:
    # query sits on image anchor 0; the text anchors are swapped relative to the images
    q = torch.tensor([[1.0, 0.0]], requires_grad=True)
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    ranking_consistency(q, images, texts, 0.5).backward()
    assert texts.grad is None  # anchors are detached
    # descent (−grad) raises q·t_0 = q[1]: the caption of q's nearest image
    assert q.grad[0, 1] < 0 < q.grad[0, 0]


def test_ranking_consistency_with_a_given_teacher_similarity() -> None:
    q = torch.tensor([[1.0, 0.0]], requires_grad=True)
    texts = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    teacher = torch.tensor([[0.2, 0.9]])  # e.g. cosines of the frozen inputs
    value = ranking_consistency(q, texts, texts, 0.5, teacher, teacher_temperature=0.1)
    ref = torch.nn.functional.kl_div(
        torch.log_softmax(torch.tensor([[0.6, 1.0]]) / 0.5, 1),
        torch.softmax(teacher / 0.1, 1),
        reduction="batchmean",
    )
    assert value.item() == pytest.approx(ref.item(), rel=1e-6)


def test_pseudo_pair_triplet_hand_example() -> None:
    q = torch.tensor([[1.0, 0.0]])
    same = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.0, 1.0]])  # nearest: row 0 -> positive 0
    other = torch.tensor([[0.5, 0.0], [0.6, 0.0], [0.55, 0.0]])  # q·b = 0.5, 0.6, 0.55
    image_index = torch.tensor([0, 1, 0])  # row 2 is another caption of image 0: no negative
    loss = pseudo_pair_triplet(q, same, other, image_index, margin=0.2)
    assert loss.item() == pytest.approx(0.2 - 0.5 + 0.6)
    # a teacher that prefers anchor 1 makes b_1 the positive; row 0 and 2 are then negatives
    teacher = torch.tensor([[0.0, 1.0, 0.0]])
    loss = pseudo_pair_triplet(q, same, other, image_index, 0.2, teacher)
    assert loss.item() == pytest.approx(0.2 - 0.6 + 0.55)


# --- the method -------------------------------------------------------------------------------
def test_registry_and_missing_target_data() -> None:
    m = build_method("aeir(vse)", 12, 10, **SMALL)
    assert isinstance(m, AEIR) and m.base.name == "vse"
    with pytest.raises(ValueError, match="unpaired target images and texts"):
        m.loss(_source_batch())
    with pytest.raises(ValueError, match="structure"):
        build_method("aeir", 12, 10, structure="pairs")


def test_loss_adds_weighted_terms_to_the_unchanged_base_loss() -> None:
    torch.manual_seed(0)
    m = build_method("aeir", 12, 10, **SMALL, adversarial_weight=0.3, structure_weight=2.0)
    plain = build_method("infonce", 12, 10, **SMALL)
    plain.load_state_dict(m.base.state_dict())
    batch = _with_target(_source_batch())
    terms = m.loss(batch)
    assert terms["base_loss"].item() == pytest.approx(plain.loss(batch)["loss"].item(), rel=1e-6)
    expected = terms["base_loss"] + 0.3 * terms["adv"] + 2.0 * terms["structure"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    m.config.structure = "triplet"
    assert m.loss(batch)["structure"].item() >= 0
    m.config.structure, m.config.structure_teacher = "listwise", "input"
    assert m.loss(batch)["structure"].item() > 0


def test_the_whole_objective_decreases_on_a_small_batch() -> None:
    torch.manual_seed(0)
    batch = _with_target(_source_batch(16), n=16)
    m = build_method("aeir", 12, 10, embed_dim=16, hidden=[32], dropout=0.0, reversal=0.0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = m.loss(batch)
    for _ in range(60):
        opt.zero_grad()
        m.loss(batch)["loss"].backward()
        opt.step()
    last = m.loss(batch)
    # reversal=0: the discriminators learn, the heads are not pushed: every term goes down
    for key in ("loss", "base_loss", "adv", "structure"):
        assert last[key].item() < first[key].item(), key
    assert last["domain_accuracy"].item() == 1.0  # shifted target: easy to tell apart


def test_adversarial_heads_confuse_the_discriminator() -> None:
    # the target is the source shifted: with reversal the heads learn to hide the shift
    torch.manual_seed(0)
    batch = _with_target(_source_batch(16), n=16)
    disc_loss = {}
    for lam in (0.0, 1.0):
        torch.manual_seed(0)
        m = build_method(
            "aeir", 12, 10, **SMALL, reversal=lam, structure_weight=0.0, adversarial_weight=1.0
        )
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(80):
            opt.zero_grad()
            m.loss(batch)["loss"].backward()
            opt.step()
        disc_loss[lam] = m.loss(batch)["adv"].item()
    assert disc_loss[1.0] > disc_loss[0.0] + 0.2  # discriminator loss stays high when reversed


# --- the trainer's unpaired path --------------------------------------------------------------
def test_unpaired_rows_reach_every_batch_and_extras_follow_their_rows() -> None:
    train = _split(20, 0)
    rng = np.random.default_rng(5)
    target = UnpairedFeatures(rng.normal(size=(30, 12)), rng.normal(size=(9, 10)))
    extra_i = np.arange(20, dtype=np.float32)[:, None] * 10
    extra_t = np.arange(40, dtype=np.float32)[:, None]
    paired = PairedFeatures(
        train.image,
        train.text,
        train.text_to_image,
        image_extra={"img_id": extra_i},
        text_extra={"txt_id": extra_t},
    )
    data = paired.to_training_data(torch.device("cpu"), target)
    g, tg = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    seen = set()
    for batch in iterate_batches(data, 16, g, tg):
        n = batch.text.shape[0]  # 16, 16, then the last 8 captions
        assert batch.target_image.shape == (n, 12)
        assert batch.target_text.shape == (min(n, 9), 10)  # fewer target texts: all of them
        rows = (batch.target_image[:, None, :] == data.target_image_features[None]).all(-1)
        assert (rows.sum(1) == 1).all()  # each is a row of the unpaired set...
        assert len(set(rows.int().argmax(1).tolist())) == n  # ...and distinct
        seen |= set(rows.int().argmax(1).tolist())
        assert torch.equal(batch.extra["img_id"][:, 0], batch.image_index.float() * 10)
        assert torch.equal(batch.extra["txt_id"][:, 0], batch.text_index.float())
    assert len(seen) > 16  # fresh rows each step
    with pytest.raises(ValueError, match="unpaired image features have 5 dims"):
        wrong = UnpairedFeatures(np.zeros((3, 5)), target.text)
        paired.to_training_data(torch.device("cpu"), wrong)
    with pytest.raises(ValueError, match="non-empty 2-D"):
        UnpairedFeatures(np.zeros((0, 12)), target.text)
    with pytest.raises(ValueError, match="needs 20 rows"):
        PairedFeatures(train.image, train.text, train.text_to_image, image_extra={"x": extra_t})


def test_batches_without_unpaired_data_are_as_before() -> None:
    data = _split(20, 0).to_training_data(torch.device("cpu"))
    batches = list(iterate_batches(data, 16, torch.Generator().manual_seed(3)))
    order = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.cat([b.text_index for b in batches]), order)
    assert all(b.target_image is None and b.target_text is None and b.extra == {} for b in batches)


def test_methods_that_ignore_unpaired_data_train_exactly_as_before() -> None:
    train, val = _split(40, 0), _split(20, 1)
    target = UnpairedFeatures(_split(30, 2, shift=1.0).image, _split(30, 2).text)
    states, histories = [], []
    for unpaired in (None, target):
        torch.manual_seed(0)
        m = build_method("infonce", 12, 10, **SMALL)
        r = Trainer(m, TrainConfig(**FAST)).fit(train, val, unpaired=unpaired)
        states.append(m.state_dict())
        histories.append([{k: v for k, v in h.items() if k != "seconds"} for h in r.history])
    assert histories[0] == histories[1]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


class _Recorder(InfoNCE):
    name = "recorder-test"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.targets: list[torch.Tensor] = []

    def loss(self, batch: Batch, stage: str = "main") -> dict[str, torch.Tensor]:
        self.targets.append(batch.target_image.clone())
        return super().loss(batch, stage)


def test_trainer_samples_target_rows_reproducibly_and_aeir_trains() -> None:
    train, val = _split(40, 0), _split(20, 1)
    target = UnpairedFeatures(_split(30, 2, shift=1.0).image, _split(30, 2).text)
    runs = []
    for _ in range(2):
        m = _Recorder(_Recorder.Config(**SMALL), 12, 10)
        Trainer(m, TrainConfig(**FAST)).fit(train, val, unpaired=target)
        runs.append(torch.cat(m.targets))
    assert torch.equal(runs[0], runs[1])  # seeded by the trainer
    assert runs[0].shape == (2 * 5 * 16, 12)  # 80 captions / 16 = 5 steps per epoch
    torch.manual_seed(0)
    m = build_method("aeir", 12, 10, **SMALL)
    result = Trainer(m, TrainConfig(**FAST)).fit(train, val, unpaired=target)
    assert {"adv", "structure", "domain_accuracy"} <= set(result.history[-1])
    with pytest.raises(ValueError, match="unpaired"):
        Trainer(build_method("aeir", 12, 10, **SMALL), TrainConfig(**FAST)).fit(train, val)

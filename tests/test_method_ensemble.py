"""ensemble(<base>): mean-similarity ensembles of independently initialised copies of a method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmodal.methods import Batch, build_method, config_to_dict
from xmodal.training import PairedFeatures, TrainConfig, Trainer

SMALL = dict(embed_dim=8, hidden=[16], dropout=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(n: int = 16, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 12, generator=g)
    t2i = torch.arange(n).repeat_interleave(2)
    text = images[t2i] @ torch.randn(12, 10, generator=g) + 0.1 * torch.randn(
        2 * n, 10, generator=g
    )
    return Batch(images[t2i], text, t2i, torch.arange(2 * n))


def test_embedding_is_unit_length_and_its_cosine_is_the_mean_of_the_members_cosines() -> None:
    torch.manual_seed(0)
    m = build_method("ensemble(infonce)", 12, 10, members=3, **SMALL).eval()
    batch = _batch()
    img, txt = m.embed_image(batch.image), m.embed_text(batch.text)
    assert img.shape == (32, 3 * 8)
    assert torch.allclose(img.norm(dim=1), torch.ones(32), atol=1e-6)
    member_cos = torch.stack(
        [mm.embed_image(batch.image) @ mm.embed_text(batch.text).T for mm in m.members]
    )
    assert torch.allclose(img @ txt.T, member_cos.mean(0), atol=1e-6)
    # members start from different initialisations
    w = [torch.nn.utils.parameters_to_vector(mm.parameters()) for mm in m.members]
    assert not torch.allclose(w[0], w[1])


def test_loss_is_the_mean_of_the_members_losses() -> None:
    torch.manual_seed(0)
    m = build_method("ensemble(vse)", 12, 10, members=4, **SMALL)
    batch = _batch()
    expected = torch.stack([mm.loss(batch)["loss"] for mm in m.members]).mean()
    assert m.loss(batch)["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_stages_cover_every_members_parameters_once() -> None:
    m = build_method("ensemble(multitask)", 12, 10, members=2, base_options={"bits": 16})
    member = m.members[0].stages()
    stages = m.stages()
    assert [s.name for s in stages] == [s.name for s in member]
    for joint, one in zip(stages, member, strict=True):
        assert len(joint.parameters) == 2 * len(one.parameters)
        assert len({id(p) for p in joint.parameters}) == len(joint.parameters)
        assert (joint.select, joint.epoch_fraction) == (one.select, one.epoch_fraction)


def test_nested_wrappers_take_their_base_options() -> None:
    m = build_method(
        "ensemble(cusa(vse))",
        12,
        10,
        members=2,
        **SMALL,
        base_options={"teacher_temperature": 0.1, "uni_head": "none"},
    )
    assert [type(mm).__name__ for mm in m.members] == ["CUSA", "CUSA"]
    assert all(mm.config.teacher_temperature == 0.1 for mm in m.members)
    assert m.members[0].config.embed_dim == 8  # shared options reach the members


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("ensemble(infonce)", {"members": 0}, "members must be >= 1"),
        ("ensemble(cca)", {}, "closed-form"),
        ("ensemble(ensemble)", {}, "cannot wrap itself"),
        ("ensemble(infonce)", {"base_options": {"embed_dim": 4}}, "shared options"),
    ],
)
def test_bad_configurations_are_refused(name: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_method(name, 12, 10, **options)


def test_the_objective_decreases_and_members_stay_distinct() -> None:
    torch.manual_seed(0)
    m = build_method("ensemble(infonce)", 12, 10, members=3, embed_dim=16, hidden=[32], dropout=0.0)
    batch = _batch()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = m.loss(batch)["loss"].item()
    for _ in range(60):
        opt.zero_grad()
        m.loss(batch)["loss"].backward()
        opt.step()
    assert m.loss(batch)["loss"].item() < 0.5 * first
    a, b = (mm.embed_image(batch.image) for mm in m.members[:2])
    assert not torch.allclose(a, b, atol=1e-3)


def test_trains_with_the_trainer_and_rebuilds_from_its_config() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(40, 12)).astype(np.float32)
    t2i = np.repeat(np.arange(40), 2)
    text = (image[t2i] @ rng.normal(size=(12, 10)) + 0.3 * rng.normal(size=(80, 10))).astype(
        np.float32
    )
    data = PairedFeatures(image, text, t2i)
    m = build_method("ensemble(cusa(infonce))", 12, 10, members=2, **SMALL)
    cfg = TrainConfig(epochs=2, batch_size=16, progress=False, device="cpu")
    result = Trainer(m, cfg).fit(data, data)
    assert {"loss", "csa", "usa"} <= set(result.history[0])
    assert len(m.extra_state_for_run()["members"]) == 2
    options = {k: v for k, v in config_to_dict(m.config).items() if k != "base"}
    rebuilt = build_method("ensemble(cusa(infonce))", 12, 10, **options)
    rebuilt.load_state_dict(m.state_dict())
    x = torch.as_tensor(image[:3])
    assert torch.allclose(rebuilt.eval().embed_image(x), m.eval().embed_image(x))

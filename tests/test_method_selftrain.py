"""selftrain(<base>): the CSLS mutual-nearest-neighbour miner and self-training on a shifted domain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmodal.embedding import embed_features
from xmodal.evaluation import retrieval_recall
from xmodal.methods import build_method
from xmodal.methods.selftrain import (
    PseudoPairs,
    SelfTrain,
    calibrate_min_score,
    mutual_nearest_pairs,
    pseudo_pair_precision,
)
from xmodal.training import PairedFeatures, TrainConfig, Trainer, seed_everything
from xmodal.training.data import UnpairedFeatures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute_force(img: np.ndarray, txt: np.ndarray, k: int) -> list[tuple[int, int, float]]:
    """CSLS mutual nearest neighbours from the full matrix, with plain loops."""
    sim = img.astype(np.float64) @ txt.astype(np.float64).T
    n_i, n_t = sim.shape
    r_img = [np.sort(sim[u])[::-1][: min(k, n_t)].mean() if k else 0.0 for u in range(n_i)]
    r_txt = [np.sort(sim[:, w])[::-1][: min(k, n_i)].mean() if k else 0.0 for w in range(n_t)]
    csls = np.array([[2 * sim[u, w] - r_img[u] - r_txt[w] for w in range(n_t)] for u in range(n_i)])
    pairs = []
    for u in range(n_i):
        w = int(np.argmax(csls[u]))
        if int(np.argmax(csls[:, w])) == u:
            pairs.append((u, w, float(csls[u, w])))
    return sorted(pairs, key=lambda p: (-p[2], p[0]))


@pytest.mark.parametrize(
    ("n_img", "n_txt", "k", "chunk"),
    [(40, 40, 10, 7), (30, 55, 5, 1), (50, 20, 0, 4096), (25, 25, 100, 3)],
)
def test_miner_matches_brute_force(n_img: int, n_txt: int, k: int, chunk: int) -> None:
    rng = np.random.default_rng(n_img + n_txt + k)
    img = _unit(rng.normal(size=(n_img, 6)))
    txt = _unit(
        np.concatenate([img, rng.normal(size=(n_img, 6))])[:n_txt]
        + 0.8 * rng.normal(size=(n_txt, 6))
    )
    got = mutual_nearest_pairs(img, txt, k=k, chunk_size=chunk)
    want = _brute_force(img, txt, k)
    assert len(want) > 3  # the case is not trivial
    assert list(zip(got.image.tolist(), got.text.tolist(), strict=True)) == [
        (u, w) for u, w, _ in want
    ]
    np.testing.assert_allclose(got.score.numpy(), [s for _, _, s in want], rtol=1e-5, atol=1e-5)
    # one-to-one by construction
    assert len(set(got.image.tolist())) == len(got) == len(set(got.text.tolist()))


def test_csls_discounts_a_hub_text() -> None:
    # text 0 is equally close to every image (a hub, cosine 0.58), closer than each image's own
    # text (0.45): plain cosine pairs image 0 with the hub; CSLS pairs every image with its own
    eye = np.eye(4)
    img = eye[:3]
    txt = _unit(np.stack([eye[0] + eye[1] + eye[2], *(0.5 * eye[i] + eye[3] for i in range(3))]))
    plain = mutual_nearest_pairs(img, txt, k=0)
    assert list(zip(plain.image.tolist(), plain.text.tolist(), strict=True)) == [(0, 0)]
    csls = mutual_nearest_pairs(img, txt, k=2)
    assert sorted(zip(csls.image.tolist(), csls.text.tolist(), strict=True)) == [
        (0, 1),
        (1, 2),
        (2, 3),
    ]


def test_top_and_precision() -> None:
    pairs = PseudoPairs(
        torch.tensor([0, 1, 2, 3]), torch.tensor([0, 5, 2, 7]), torch.tensor([0.9, 0.8, 0.5, 0.1])
    )
    assert len(pairs.top(0.5)) == 2 and len(pairs.top(0.6)) == 3
    assert pairs.top(1.0, min_score=0.4).image.tolist() == [0, 1, 2]
    t2i = np.array([0, 1, 2, 3, 4, 1, 6, 3])  # text 5 belongs to image 1, text 7 to image 3
    assert pseudo_pair_precision(pairs, t2i, [0.25, 0.5, 1.0]) == {0.25: 1.0, 0.5: 1.0, 1.0: 1.0}
    t2i[5] = 4
    assert pseudo_pair_precision(pairs, t2i, [0.5, 1.0]) == {0.5: 0.5, 1.0: 0.75}
    with pytest.raises(ValueError, match="fraction"):
        pairs.top(0.0)


def test_calibrated_min_score_keeps_the_longest_precise_prefix() -> None:
    score = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    pairs = PseudoPairs(torch.arange(6), torch.arange(6), score)
    t2i = np.array([0, 9, 2, 9, 9, 5])  # right, wrong, right, wrong, wrong, right
    # prefix precisions 1, 1/2, 2/3, 2/4, 2/5, 3/6
    assert calibrate_min_score(pairs, t2i, 0.5) == pytest.approx(0.4)
    assert calibrate_min_score(pairs, t2i, 0.6) == pytest.approx(0.7)
    assert calibrate_min_score(pairs, t2i, 1.0) == pytest.approx(0.9)
    assert calibrate_min_score(pairs, np.array([9, 9, 9, 9, 9, 9]), 0.5) == float("inf")
    assert len(pairs.top(1.0, calibrate_min_score(pairs, t2i, 0.6))) == 3


def test_options_are_checked_and_target_data_is_required() -> None:
    with pytest.raises(ValueError, match="top_fraction"):
        build_method("selftrain(infonce)", 4, 4, top_fraction=1.5)
    with pytest.raises(ValueError, match="refresh_epochs"):
        build_method("selftrain(infonce)", 4, 4, refresh_epochs=0)
    model = build_method("selftrain(infonce)", 4, 4, embed_dim=4, hidden=[8])
    data = PairedFeatures(np.ones((4, 4), np.float32), np.ones((4, 4), np.float32), np.arange(4))
    with pytest.raises(ValueError, match="unpaired target"):
        Trainer(model, TrainConfig(epochs=1, progress=False, device="cpu")).fit(data)


def _domain(rng: np.random.Generator, n: int, a: np.ndarray, b: np.ndarray) -> PairedFeatures:
    z = rng.standard_normal((n, a.shape[0])).astype(np.float32)
    image = z @ a + rng.standard_normal((n, a.shape[1])).astype(np.float32)
    text = z @ b + rng.standard_normal((n, b.shape[1])).astype(np.float32)
    return PairedFeatures(image, text, np.arange(n))


def test_self_training_improves_a_shifted_target_domain() -> None:
    """Source and target share the latent content but the target's feature maps are perturbed:
    the source-trained space transfers partly, its confident mutual neighbours are mostly right,
    and training on them closes much of the gap. Nothing here sees a target pair."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((16, 48)), rng.standard_normal((16, 32))
    a2, b2 = a + 0.5 * rng.standard_normal(a.shape), b + 0.5 * rng.standard_normal(b.shape)
    source = {"train": _domain(rng, 600, a, b), "val": _domain(rng, 200, a, b)}
    target, target_test = _domain(rng, 600, a2, b2), _domain(rng, 200, a2, b2)
    cfg = TrainConfig(epochs=12, batch_size=64, progress=False, device="cpu")
    rsum = {}
    for name, unpaired in (
        ("infonce", None),
        ("selftrain(infonce)", UnpairedFeatures(target.image, target.text)),
    ):
        seed_everything(0)
        opts = {"top_fraction": 0.5} if unpaired is not None else {}
        model = build_method(name, 48, 32, embed_dim=32, hidden=[64], **opts)
        Trainer(model, cfg).fit(source["train"], source["val"], unpaired=unpaired)
        img = embed_features(model, target_test.image, "image")
        txt = embed_features(model, target_test.text, "text")
        rsum[name] = retrieval_recall(img @ txt.T, target_test.text_to_image)["rsum"]
        if isinstance(model, SelfTrain):
            pairs = model.pseudo_pairs
            assert model.rounds == 12 and pairs is not None  # mined after every epoch from the 1st
            assert 100 <= len(pairs) <= 0.5 * 600 + 1  # half of the mutual pairs, at most 300
            precision = pseudo_pair_precision(pairs, target.text_to_image, [1.0])[1.0]
            assert precision > 0.9
    assert rsum["selftrain(infonce)"] > rsum["infonce"] + 15, rsum

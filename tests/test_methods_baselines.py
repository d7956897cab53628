"""Loss terms of the baseline methods on hand-checkable inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from xmodal.methods import Batch, TrainingData, build_method, list_methods
from xmodal.methods.cca import canonical_correlation
from xmodal.methods.infonce import multi_positive_infonce
from xmodal.methods.vse import hardest_negative_triplet


def test_registry_lists_baselines_and_rejects_unknown_options() -> None:
    assert {"cca", "infonce", "vse"} <= set(list_methods())
    with pytest.raises(ValueError, match="unknown option"):
        build_method("infonce", 8, 8, temprature=0.1)
    with pytest.raises(ValueError, match="unknown method"):
        build_method("nope", 8, 8)


def test_multi_positive_infonce_equals_cross_entropy_with_diagonal_positives() -> None:
    logits = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    expected = F.cross_entropy(logits, torch.arange(6))
    assert torch.allclose(multi_positive_infonce(logits, torch.eye(6, dtype=torch.bool)), expected)


def test_multi_positive_infonce_hand_example() -> None:
    # Row 0 has positives {0, 1}: -log((e^2 + e^1) / (e^2 + e^1 + e^0)).
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    pos = torch.tensor([[True, True, False]])
    expected = -np.log((np.e**2 + np.e) / (np.e**2 + np.e + 1))
    assert multi_positive_infonce(logits, pos).item() == pytest.approx(expected, rel=1e-5)


def test_multi_positive_infonce_gradient_raises_positive_and_lowers_negatives() -> None:
    logits = torch.zeros(1, 3, requires_grad=True)
    multi_positive_infonce(logits, torch.tensor([[True, False, False]])).backward()
    grad = logits.grad[0]
    assert grad[0] < 0 and grad[1] > 0 and grad[2] > 0  # descent raises the positive logit


def test_triplet_is_zero_when_margin_is_met_and_counts_the_hardest_negative() -> None:
    sim = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.8, 0.3], [0.0, 0.1, 0.7]])
    eye = torch.eye(3, dtype=torch.bool)
    assert hardest_negative_triplet(sim, eye, margin=0.2).item() == pytest.approx(0.0)
    # Row 0: hardest caption negative 0.5 -> 0.2 - 0.9 + 0.5 < 0; raise it to 0.8: cost 0.1.
    sim[0, 1] = 0.8
    # image-side: column 1's hardest negative image is row 0 (0.8): 0.2 - 0.8 + 0.8 = 0.2
    assert hardest_negative_triplet(sim, eye, margin=0.2).item() == pytest.approx((0.1 + 0.2) / 3)


def test_triplet_never_uses_another_caption_of_the_same_image_as_negative() -> None:
    sim = torch.tensor([[0.5, 0.9], [0.9, 0.5]])
    same_image = torch.ones(2, 2, dtype=torch.bool)
    assert hardest_negative_triplet(sim, same_image, margin=0.2).item() == 0.0


def test_canonical_correlation_recovers_a_planted_correlation() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 2))
    x = np.c_[z[:, 0], rng.normal(size=(4000, 4))] @ rng.normal(size=(5, 5))
    y = np.c_[0.8 * z[:, 0] + 0.6 * rng.normal(size=4000), rng.normal(size=(4000, 2))]
    mx, my, wx, wy, s = canonical_correlation(torch.tensor(x), torch.tensor(y), k=2, ridge=0.0)
    assert s[0].item() == pytest.approx(0.8, abs=0.02)
    u = ((torch.tensor(x) - mx) @ wx).numpy()
    v = ((torch.tensor(y) - my) @ wy).numpy()
    assert np.corrcoef(u[:, 0], v[:, 0])[0, 1] == pytest.approx(s[0].item(), abs=1e-6)
    assert np.var(u[:, 0], ddof=1) == pytest.approx(1.0, abs=1e-6)
    # scikit-learn's iterative CCA finds the same first correlation
    from sklearn.cross_decomposition import CCA as SkCCA

    a, b = SkCCA(n_components=1).fit(x, y).transform(x, y)
    assert abs(np.corrcoef(a[:, 0], b[:, 0])[0, 1]) == pytest.approx(s[0].item(), abs=1e-3)


def _paired(n_images: int = 32, per_image: int = 2, seed: int = 0) -> tuple[TrainingData, Batch]:
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n_images, 12, generator=g)
    t2i = torch.arange(n_images).repeat_interleave(per_image)
    txt = img[t2i] @ torch.randn(12, 10, generator=g) + 0.1 * torch.randn(len(t2i), 10, generator=g)
    data = TrainingData(img, txt, t2i)
    batch = Batch(img[t2i], txt, t2i, torch.arange(len(t2i)))
    return data, batch


@pytest.mark.parametrize("name", ["infonce", "vse"])
def test_objective_decreases_on_a_small_batch(name: str) -> None:
    torch.manual_seed(0)
    _, batch = _paired()
    method = build_method(name, 12, 10, embed_dim=16, hidden=[32], dropout=0.0)
    opt = torch.optim.Adam(method.parameters(), lr=1e-2)
    first = method.loss(batch)["loss"].item()
    for _ in range(50):
        opt.zero_grad()
        method.loss(batch)["loss"].backward()
        opt.step()
    assert method.loss(batch)["loss"].item() < 0.5 * first


def test_cca_fit_aligns_paired_rows() -> None:
    data, _ = _paired(n_images=200, per_image=1)
    method = build_method("cca", 12, 10, embed_dim=8, power=1.0)
    method.fit(data)
    img = method.embed_image(data.image_features)
    txt = method.embed_text(data.text_features)
    top1 = (img @ txt.T).argmax(1)
    assert (top1 == torch.arange(200)).float().mean() > 0.9

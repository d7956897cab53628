"""precision@k and precision-recall curves against naive loops; plots write real PNGs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from xmodal.evaluation import (
    PRCurve,
    hamming_distance,
    hamming_precision_recall,
    hamming_scores,
    plot_precision_recall,
    plot_recall_at_k,
    precision_at_k,
    precision_recall_curve,
    topk_precision_recall,
)

# --------------------------------------------------------------------------- references


def naive_top(scores_row: np.ndarray, k: int) -> list[int]:
    return sorted(range(len(scores_row)), key=lambda j: (-scores_row[j], j))[:k]


def naive_precision_at_k(scores, rel, ks):
    out = {}
    for k in ks:
        per_query = [
            sum(rel[q, j] for j in naive_top(scores[q], k)) / k for q in range(len(scores))
        ]
        out[k] = float(np.mean(per_query))
    return out


def brute_force_expected_hits(scores_row, rel_row, k) -> float:
    values = sorted(set(scores_row))[::-1]
    groups = [[j for j in range(len(scores_row)) if scores_row[j] == v] for v in values]
    hits = [
        sum(rel_row[j] for j in [j for g in combo for j in g][:k])
        for combo in itertools.product(*(itertools.permutations(g) for g in groups))
    ]
    return float(np.mean(hits))


def naive_hamming_pr(dist, rel, bits):
    """The classic hashing loop: per query and radius, skip precision if nothing retrieved."""
    precision, recall = [], []
    for radius in range(bits + 1):
        ps, rs = [], []
        for q in range(dist.shape[0]):
            retrieved = [j for j in range(dist.shape[1]) if dist[q, j] <= radius]
            hits = sum(1 for j in retrieved if rel[q, j])
            if retrieved:
                ps.append(hits / len(retrieved))
            if rel[q].sum() > 0:
                rs.append(hits / rel[q].sum())
        precision.append(np.mean(ps) if ps else np.nan)
        recall.append(np.mean(rs) if rs else np.nan)
    return np.array(precision), np.array(recall)


# --------------------------------------------------------------------------- precision@k


@pytest.mark.parametrize("ties", ["index", "average"])
def test_precision_at_k_matches_naive_without_ties(ties) -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((30, 50))
    rel = rng.random((30, 50)) < 0.3
    ks = [1, 5, 10, 50]
    ref = naive_precision_at_k(scores, rel, ks)
    got = precision_at_k(scores, rel, ks, ties=ties, chunk_size=7)
    assert list(got) == ks
    assert got == pytest.approx(ref, abs=1e-12)


def test_precision_at_k_with_ties() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 3, size=(20, 7)).astype(np.float64)
    rel = rng.random((20, 7)) < 0.4
    ks = [1, 2, 4, 7]
    got_index = precision_at_k(scores, rel, ks, ties="index")
    assert got_index == pytest.approx(naive_precision_at_k(scores, rel, ks), abs=1e-12)
    got = precision_at_k(scores, rel, ks, ties="average", chunk_size=3)
    ref = {
        k: np.mean([brute_force_expected_hits(scores[q], rel[q], k) / k for q in range(20)])
        for k in ks
    }
    assert got == pytest.approx(ref, abs=1e-12)


# --------------------------------------------------------------------------- PR curves


@pytest.mark.parametrize("bits", [16, 32])
def test_hamming_pr_curve_matches_naive_loop(bits) -> None:
    rng = np.random.default_rng(bits)
    q = np.where(rng.random((15, bits)) < 0.5, 1, -1)
    # Database codes near some queries so that small radii retrieve something for some queries.
    d = np.where(rng.random((40, bits)) < 0.5, 1, -1)
    d[:10] = q[:10] * np.where(rng.random((10, bits)) < 0.1, -1, 1)
    rel = rng.random((15, 40)) < 0.3
    rel[3] = False  # no relevant item: excluded from recall, precision 0 where it retrieves
    dist = hamming_distance(q, d)
    p_ref, r_ref = naive_hamming_pr(dist, rel, bits)
    curve = hamming_precision_recall(hamming_scores(q, d), rel, bits, chunk_size=4)
    assert isinstance(curve, PRCurve)
    np.testing.assert_array_equal(curve.cutoffs, np.arange(bits + 1))
    np.testing.assert_allclose(curve.precision, p_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.recall, r_ref, rtol=0, atol=1e-12)
    assert np.isnan(curve.precision[0]) == np.isnan(p_ref[0])
    assert curve.recall[-1] == pytest.approx(1.0)
    same = precision_recall_curve(hamming_scores(q, d), rel, bits=bits)
    np.testing.assert_allclose(same.precision, curve.precision, rtol=1e-12)


def test_hamming_pr_curve_nan_when_nothing_retrieved() -> None:
    scores = -np.array([[2, 2], [1, 2]])
    rel = np.array([[True, False], [False, False]])
    precision, recall, radii = hamming_precision_recall(scores, rel, 2)
    np.testing.assert_array_equal(radii, [0, 1, 2])
    # r=0: nothing retrieved by anyone; r=1: only query 1 retrieves (an irrelevant item).
    assert np.isnan(precision[0])
    np.testing.assert_allclose(precision[1:], [0.0, (0.5 + 0.0) / 2])
    np.testing.assert_allclose(recall, [0.0, 0.0, 1.0])  # only query 0 has a relevant item


@pytest.mark.parametrize("ties", ["index", "average"])
def test_topk_pr_curve_matches_naive(ties) -> None:
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((25, 40))
    rel = rng.random((25, 40)) < 0.25
    rel[0] = False
    ks = [1, 3, 10, 40]
    curve = topk_precision_recall(scores, rel, ks, ties=ties, chunk_size=6)
    p_ref, r_ref = [], []
    for k in ks:
        hits = [sum(rel[q, j] for j in naive_top(scores[q], k)) for q in range(25)]
        p_ref.append(np.mean([h / k for h in hits]))
        r_ref.append(np.mean([hits[q] / rel[q].sum() for q in range(25) if rel[q].sum()]))
    np.testing.assert_allclose(curve.precision, p_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.recall, r_ref, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(curve.cutoffs, ks)
    assert curve.recall[-1] == pytest.approx(1.0)
    same = precision_recall_curve(scores, rel, ks=ks, ties=ties)
    np.testing.assert_allclose(same.precision, curve.precision)


# --------------------------------------------------------------------------- validation


def test_curve_validation() -> None:
    scores, rel = np.zeros((2, 4)), np.zeros((2, 4), bool)
    with pytest.raises(ValueError, match=r"exactly one of bits= .* or ks="):
        precision_recall_curve(scores, rel)
    with pytest.raises(ValueError, match="exactly one"):
        precision_recall_curve(scores, rel, bits=4, ks=[1])
    with pytest.raises(ValueError, match=r"every k must be in \[1, n_db=4\], got 5"):
        precision_at_k(scores, rel, [1, 5])
    with pytest.raises(ValueError, match="non-empty"):
        precision_at_k(scores, rel, [])
    with pytest.raises(ValueError, match="negative Hamming distances"):
        hamming_precision_recall(np.full((2, 4), 0.5), rel, 4)
    with pytest.raises(ValueError, match="negative Hamming distances"):
        hamming_precision_recall(np.full((2, 4), -5.0), rel, 4)
    with pytest.raises(ValueError, match="bits must be a positive int"):
        hamming_precision_recall(scores, rel, 0)
    with pytest.raises(ValueError, match="but relevant has shape"):
        precision_at_k(scores, rel[:, :3], [1])


# --------------------------------------------------------------------------- plots


def test_plots_write_png(tmp_path) -> None:
    rng = np.random.default_rng(4)
    scores = rng.standard_normal((10, 30))
    rel = rng.random((10, 30)) < 0.3
    curves = {
        "model a": topk_precision_recall(scores, rel, [1, 5, 10, 30]),
        "model b": (np.array([1.0, np.nan, 0.5]), np.array([0.1, 0.2, 1.0])),
    }
    out = plot_precision_recall(curves, tmp_path / "sub" / "pr.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (500, 400)
    out = plot_recall_at_k({"t2i": {1: 20.0, 5: 50.0, 10: 70.0}}, tmp_path / "r.png")
    with Image.open(out) as im:
        assert im.format == "PNG"
    with pytest.raises(ValueError, match="curves is empty"):
        plot_precision_recall({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="must be 1-D arrays of one length"):
        plot_precision_recall({"a": ([1.0, 0.5], [0.1])}, tmp_path / "x.png")

"""mAP@all / mAP@k against scikit-learn, naive loops and brute force over tie orderings."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from xmodal.evaluation import (
    average_precision_per_query,
    cross_modal_map,
    hamming_distance,
    mean_average_precision,
    relevance_from_labels,
)

# --------------------------------------------------------------------------- references


def ap_of_order(order: list[int], rel: np.ndarray, k: int | None) -> float:
    """AP@k of one ranked list; divides by the relevant items found in the top k."""
    top = order if k is None else order[:k]
    hits, total = 0, 0.0
    for i, j in enumerate(top, start=1):
        if rel[j]:
            hits += 1
            total += hits / i
    return total / hits if hits else 0.0


def naive_index_ap(scores: np.ndarray, rel: np.ndarray, k: int | None) -> float:
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    return ap_of_order(order, rel, k)


def brute_force_expected_ap(scores: np.ndarray, rel: np.ndarray, k: int | None) -> float:
    """Mean AP@k over every ordering consistent with the scores (all tie permutations)."""
    groups = [[j for j in range(len(scores)) if scores[j] == v] for v in sorted(set(scores))[::-1]]
    values = [
        ap_of_order([j for g in combo for j in g], rel, k)
        for combo in itertools.product(*(itertools.permutations(g) for g in groups))
    ]
    return float(np.mean(values))


def random_tie_free(rng: np.random.Generator, n_query: int, n_db: int, p: float = 0.3):
    scores = rng.standard_normal((n_query, n_db))
    rel = rng.random((n_query, n_db)) < p
    rel[np.arange(n_query), rng.integers(0, n_db, n_query)] = True  # sklearn needs a positive
    return scores, rel


# --------------------------------------------------------------------------- tie-free data


@pytest.mark.parametrize("ties", ["average", "index"])
@pytest.mark.parametrize("chunk_size", [None, 1, 9])
def test_map_all_matches_sklearn_per_query(ties, chunk_size) -> None:
    rng = np.random.default_rng(0)
    scores, rel = random_tie_free(rng, 60, 80)
    ref = np.array([average_precision_score(rel[q], scores[q]) for q in range(60)])
    got = average_precision_per_query(scores, rel, ties=ties, chunk_size=chunk_size)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert mean_average_precision(scores, rel, ties=ties) == pytest.approx(ref.mean(), abs=1e-12)


@pytest.mark.parametrize("ties", ["average", "index"])
@pytest.mark.parametrize("k", [1, 5, 17, 80, 1000])
def test_map_at_k_matches_naive_loop(ties, k) -> None:
    rng = np.random.default_rng(1)
    scores, rel = random_tie_free(rng, 40, 80, p=0.1)
    rel[3] = False  # a query with no relevant item at all
    ref = np.array([naive_index_ap(scores[q], rel[q], k) for q in range(40)])
    got = average_precision_per_query(scores, rel, k=k, ties=ties, chunk_size=7)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert got[3] == 0.0
    assert 0.0 < got.mean() < 1.0


def test_float32_scores_match_float64() -> None:
    rng = np.random.default_rng(2)
    scores, rel = random_tie_free(rng, 30, 50)
    s32 = scores.astype(np.float32)
    ref = [average_precision_score(rel[q], s32[q]) for q in range(30)]
    np.testing.assert_allclose(average_precision_per_query(s32, rel), ref, atol=1e-12)


# --------------------------------------------------------------------------- ties


def test_hand_worked_tie_example() -> None:
    # Item 0 (irrelevant) first, then items 1 (relevant) and 2 tied.
    scores = np.array([[2.0, 1.0, 1.0]])
    rel = np.array([[False, True, False]])
    # Orders 0,1,2 -> 1/2 and 0,2,1 -> 1/3: expected 5/12.
    assert mean_average_precision(scores, rel) == pytest.approx(float(Fraction(5, 12)), abs=1e-15)
    # @2: 0,1 -> (1/2)/1 = 1/2 and 0,2 -> no hit -> 0: expected 1/4.
    assert mean_average_precision(scores, rel, k=2) == pytest.approx(0.25, abs=1e-15)
    assert mean_average_precision(scores, rel, ties="index") == pytest.approx(0.5)
    assert mean_average_precision(scores, rel, k=2, ties="index") == pytest.approx(0.5)
    for k in (None, 1, 2, 3):
        assert mean_average_precision(scores, rel, k=k) == pytest.approx(
            brute_force_expected_ap(scores[0], rel[0], k), abs=1e-15
        )


def test_tie_group_straddling_the_cut_with_several_relevant() -> None:
    # One relevant item above, then a group of 5 ties holding 3 relevant items, cut at k=4.
    scores = np.array([[5.0, 3, 3, 3, 3, 3, 1]])
    rel = np.array([[True, True, False, True, False, True, True]])
    for k in (None, 1, 2, 3, 4, 5, 6, 7):
        expected = brute_force_expected_ap(scores[0], rel[0], k)
        assert mean_average_precision(scores, rel, k=k) == pytest.approx(expected, abs=1e-14)


@pytest.mark.parametrize("seed", range(4))
def test_average_ties_match_brute_force_on_random_small_cases(seed) -> None:
    rng = np.random.default_rng(seed)
    n_query, n_db = 25, 7
    scores = rng.integers(0, 3, size=(n_query, n_db)).astype(np.float64) / 4 + 0.1  # not integral
    rel = rng.random((n_query, n_db)) < 0.45
    for k in (None, 1, 3, 6):
        ref = [brute_force_expected_ap(scores[q], rel[q], k) for q in range(n_query)]
        got = average_precision_per_query(scores, rel, k=k, chunk_size=4)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)
        # Integer scores take the radix-sort path; same expectation.
        got_int = average_precision_per_query((scores * 4).astype(np.int64), rel, k=k)
        np.testing.assert_allclose(got_int, ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize(
    "make_scores",
    [
        lambda rng, shape: rng.integers(0, 5, size=shape).astype(np.float64) / 3,  # float ties
        lambda rng, shape: -rng.integers(0, 17, size=shape).astype(np.float32),  # -Hamming
        lambda rng, shape: rng.integers(0, 5, size=shape) * 100_000,  # wide-range ints
        lambda rng, shape: rng.integers(0, 4, size=shape).astype(np.uint8),  # unsigned
    ],
)
@pytest.mark.parametrize("k", [None, 1, 10, 33])
def test_index_ties_match_naive_stable_sort(make_scores, k) -> None:
    rng = np.random.default_rng(5)
    scores = make_scores(rng, (30, 40))
    rel = rng.random((30, 40)) < 0.3
    ref = [naive_index_ap(scores[q].astype(np.float64), rel[q], k) for q in range(30)]
    got = average_precision_per_query(scores, rel, k=k, ties="index", chunk_size=8)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_average_ties_do_not_depend_on_database_order() -> None:
    rng = np.random.default_rng(6)
    scores = rng.integers(0, 6, size=(20, 50)).astype(np.float32)
    rel = rng.random((20, 50)) < 0.3
    perm = rng.permutation(50)
    for k in (None, 7):
        a = average_precision_per_query(scores, rel, k=k)
        b = average_precision_per_query(scores[:, perm], rel[:, perm], k=k)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_query_without_relevant_items_counts_zero() -> None:
    scores = np.array([[0.9, 0.1, 0.5], [0.9, 0.1, 0.5]])
    rel = np.array([[True, False, False], [False, False, False]])
    for ties in ("average", "index"):
        ap = average_precision_per_query(scores, rel, ties=ties)
        np.testing.assert_array_equal(ap, [1.0, 0.0])
        assert mean_average_precision(scores, rel, ties=ties) == 0.5
    # Relevant only outside the top k also counts 0.
    assert mean_average_precision(scores[:1], np.array([[False, True, False]]), k=2) == 0.0


# --------------------------------------------------------------------------- relevance, four ways


def test_relevance_from_labels_matches_loop() -> None:
    rng = np.random.default_rng(7)
    q = rng.random((15, 6)) < 0.2
    d = rng.random((25, 6)) < 0.2
    ref = np.array([[bool(np.any(q[i] & d[j])) for j in range(25)] for i in range(15)])
    np.testing.assert_array_equal(relevance_from_labels(q, d), ref)
    np.testing.assert_array_equal(relevance_from_labels(q.astype(int), d.astype(np.float32)), ref)


def _naive_direction(q_scores_fn, q_lab, d_lab, n_db, leave_out, k, ties="index"):
    aps = []
    for i in range(q_lab.shape[0]):
        cols = [j for j in range(n_db) if not (leave_out and j == i)]
        s = np.array([q_scores_fn(i, j) for j in cols])
        r = np.array([bool(np.any(q_lab[i] & d_lab[j])) for j in cols])
        aps.append(naive_index_ap(s, r, k))
    return float(np.mean(aps))


@pytest.mark.parametrize("k", [None, 5])
def test_cross_modal_map_real_valued(k) -> None:
    rng = np.random.default_rng(8)
    n, dim, n_labels = 30, 8, 4
    img = rng.standard_normal((n, dim))
    txt = img + 0.8 * rng.standard_normal((n, dim))
    labels = rng.random((n, n_labels)) < 0.35
    got = cross_modal_map(img, txt, labels, labels, k=k, ties="index", chunk_size=7)

    def cos(a, b):
        return lambda i, j: float(a[i] @ b[j] / np.linalg.norm(a[i]) / np.linalg.norm(b[j]))

    ref = {
        "map_i2t": _naive_direction(cos(img, txt), labels, labels, n, False, k),
        "map_t2i": _naive_direction(cos(txt, img), labels, labels, n, False, k),
        "map_i2i": _naive_direction(cos(img, img), labels, labels, n, True, k),
        "map_t2t": _naive_direction(cos(txt, txt), labels, labels, n, True, k),
    }
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key


def test_cross_modal_map_hamming_and_separate_database() -> None:
    rng = np.random.default_rng(9)
    bits, n_q, n_db, n_labels = 16, 12, 40, 5
    qi, qt = (np.where(rng.random((n_q, bits)) < 0.5, 1, -1) for _ in range(2))
    di, dt = (np.where(rng.random((n_db, bits)) < 0.5, 1, -1) for _ in range(2))
    q_lab = rng.random((n_q, n_labels)) < 0.3
    d_lab = rng.random((n_db, n_labels)) < 0.3
    got = cross_modal_map(
        qi, qt, q_lab, q_lab, hamming=True, ties="average",
        db_image_emb=di, db_text_emb=dt, db_image_labels=d_lab, db_text_labels=d_lab,
    )  # fmt: skip
    rel = relevance_from_labels(q_lab, d_lab)
    expected = {
        "map_i2t": mean_average_precision(-hamming_distance(qi, dt), rel),
        "map_t2i": mean_average_precision(-hamming_distance(qt, di), rel),
        "map_i2i": mean_average_precision(-hamming_distance(qi, di), rel),
        "map_t2t": mean_average_precision(-hamming_distance(qt, dt), rel),
    }
    assert got == pytest.approx(expected, abs=1e-12)
    # Same-set Hamming i2i leaves the query out: compare with an explicit leave-one-out.
    same = cross_modal_map(di, dt, d_lab, d_lab, hamming=True, ties="index")
    ref = _naive_direction(
        lambda i, j: -float(np.sum(di[i] != di[j])), d_lab, d_lab, n_db, True, None
    )
    assert same["map_i2i"] == pytest.approx(ref, abs=1e-12)


# --------------------------------------------------------------------------- speed, validation


@pytest.mark.parametrize(
    ("scores", "relevant", "kwargs", "message"),
    [
        (np.zeros((2, 3)), np.zeros((2, 4), bool), {}, r"scores has shape \(2, 3\) but relevant"),
        (np.zeros(3), np.zeros(3, bool), {}, "scores must be 2-D"),
        (np.zeros((2, 3)), np.full((2, 3), 2), {}, "relevant must be bool or hold only 0/1"),
        (np.array([[np.nan, 1.0]]), np.ones((1, 2), bool), {}, "NaN"),
        (np.zeros((0, 3)), np.zeros((0, 3), bool), {}, "empty"),
        (np.zeros((2, 3)), np.zeros((2, 3), bool), {"k": 0}, "k must be >= 1"),
        (np.zeros((2, 3)), np.zeros((2, 3), bool), {"k": 2.5}, "k must be a positive int"),
        (np.zeros((2, 3)), np.zeros((2, 3), bool), {"ties": "random"}, "ties must be"),
    ],
)
def test_bad_input_raises(scores, relevant, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        mean_average_precision(scores, relevant, **kwargs)


def test_bad_labels_and_embeddings_raise() -> None:
    with pytest.raises(ValueError, match="query_labels has 3 labels per row but db_labels has 2"):
        relevance_from_labels(np.ones((2, 3), bool), np.ones((2, 2), bool))
    emb, lab = np.ones((4, 3)), np.ones((4, 2), bool)
    with pytest.raises(ValueError, match="image_emb has 4 rows but image_labels has 3"):
        cross_modal_map(emb, emb, lab[:3], lab)
    with pytest.raises(ValueError, match="embedding dims differ"):
        cross_modal_map(emb, np.ones((4, 5)), lab, lab)
    with pytest.raises(ValueError, match="all four db_"):
        cross_modal_map(emb, emb, lab, lab, db_image_emb=emb)

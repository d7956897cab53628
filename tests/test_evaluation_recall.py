"""Recall@K / rsum / ranks against naive per-query loops and hand-worked examples."""

from __future__ import annotations

import numpy as np
import pytest

from xmodal.evaluation import (
    recall_at_k,
    retrieval_rank_stats,
    retrieval_ranks,
    retrieval_recall,
)

# --------------------------------------------------------------------------- references


def vsepp_ranks(sim: np.ndarray, t2i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The argsort reference of the VSE++ / SCAN code, generalised to uneven caption counts.

    Only valid without ties (argsort order among ties is arbitrary).
    """
    n_images, n_texts = sim.shape
    image_ranks = np.empty(n_images, dtype=np.int64)
    for i in range(n_images):
        inds = np.argsort(sim[i])[::-1]
        image_ranks[i] = min(np.where(inds == t)[0][0] for t in np.flatnonzero(t2i == i))
    text_ranks = np.empty(n_texts, dtype=np.int64)
    for t in range(n_texts):
        inds = np.argsort(sim[:, t])[::-1]
        text_ranks[t] = np.where(inds == t2i[t])[0][0]
    return image_ranks, text_ranks


def pessimistic_ranks(sim: np.ndarray, t2i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain-Python ranks with every tie counted against the query (the documented rule)."""
    n_images, n_texts = sim.shape
    image_ranks = []
    for i in range(n_images):
        best = max(sim[i, t] for t in range(n_texts) if t2i[t] == i)
        image_ranks.append(sum(1 for t in range(n_texts) if t2i[t] != i and sim[i, t] >= best))
    text_ranks = []
    for t in range(n_texts):
        own = sim[t2i[t], t]
        text_ranks.append(sum(1 for j in range(n_images) if j != t2i[t] and sim[j, t] >= own))
    return np.array(image_ranks), np.array(text_ranks)


def naive_recall(image_ranks: np.ndarray, text_ranks: np.ndarray) -> dict[str, float]:
    out = {}
    for prefix, ranks in (("i2t", image_ranks), ("t2i", text_ranks)):
        for k in (1, 5, 10):
            out[f"{prefix}_r{k}"] = 100.0 * sum(1 for r in ranks if r < k) / len(ranks)
    out["rsum"] = sum(out.values())
    return out


def five_captions(rng: np.random.Generator, n_images: int) -> np.ndarray:
    return np.repeat(np.arange(n_images), 5)


def uneven_captions(rng: np.random.Generator, n_images: int) -> np.ndarray:
    counts = rng.integers(1, 8, size=n_images)
    t2i = np.repeat(np.arange(n_images), counts)
    return rng.permutation(t2i)  # captions need not be grouped by image


# --------------------------------------------------------------------------- random data


@pytest.mark.parametrize("captions", [five_captions, uneven_captions])
@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_matches_argsort_reference_without_ties(captions, chunk_size) -> None:
    rng = np.random.default_rng(0)
    n_images = 40
    t2i = captions(rng, n_images)
    # Signal so that recall is neither 0 nor 100.
    sim = rng.standard_normal((n_images, t2i.size)) + 2.0 * (t2i[None, :] == np.arange(40)[:, None])
    img_ref, txt_ref = vsepp_ranks(sim, t2i)
    img, txt = retrieval_ranks(sim, t2i, chunk_size=chunk_size)
    np.testing.assert_array_equal(img, img_ref)
    np.testing.assert_array_equal(txt, txt_ref)
    got = retrieval_recall(sim, t2i, chunk_size=chunk_size)
    ref = naive_recall(img_ref, txt_ref)
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12)
    assert 0 < got["i2t_r1"] < 100 and 0 < got["t2i_r1"] < 100


@pytest.mark.parametrize("captions", [five_captions, uneven_captions])
def test_matches_pessimistic_loop_with_many_ties(captions) -> None:
    rng = np.random.default_rng(1)
    n_images = 25
    t2i = captions(rng, n_images)
    sim = rng.integers(0, 4, size=(n_images, t2i.size)).astype(np.float32)  # heavy ties
    img_ref, txt_ref = pessimistic_ranks(sim, t2i)
    for chunk_size in (None, 4):
        img, txt = retrieval_ranks(sim, t2i, chunk_size=chunk_size)
        np.testing.assert_array_equal(img, img_ref)
        np.testing.assert_array_equal(txt, txt_ref)


# --------------------------------------------------------------------------- hand-worked


def test_hand_worked_three_images() -> None:
    # Captions 0,1 -> image 0; 2,3 -> image 1; 4,5 -> image 2.
    t2i = np.array([0, 0, 1, 1, 2, 2])
    sim = np.array(
        [
            [0.9, 0.2, 0.8, 0.1, 0.3, 0.4],  # best own 0.9: nothing above -> rank 0
            [0.7, 0.6, 0.5, 0.3, 0.2, 0.1],  # best own 0.5: 0.7, 0.6 above -> rank 2
            [0.1, 0.15, 0.3, 0.4, 0.05, 0.5],  # best own 0.5: nothing above -> rank 0
        ]
    )
    img, txt = retrieval_ranks(sim, t2i)
    np.testing.assert_array_equal(img, [0, 2, 0])
    # Columns: t0 own .9 top; t1 own .2 < .6; t2 own .5 < .8; t3 own .3 < .4; t4 own .05 last.
    np.testing.assert_array_equal(txt, [0, 1, 1, 1, 2, 0])
    got = retrieval_recall(sim, t2i)
    assert got["i2t_r1"] == pytest.approx(200 / 3)
    assert got["i2t_r5"] == got["i2t_r10"] == 100.0
    assert got["t2i_r1"] == pytest.approx(100 / 3)
    assert got["t2i_r5"] == got["t2i_r10"] == 100.0
    assert got["rsum"] == pytest.approx(500.0)
    stats = retrieval_rank_stats(sim, t2i)
    assert stats == pytest.approx(
        {"i2t_medr": 1.0, "i2t_meanr": 1 + 2 / 3, "t2i_medr": 2.0, "t2i_meanr": 1 + 5 / 6}
    )


def test_ties_count_against_the_query() -> None:
    # A constant matrix: every negative ties with the positive -> nothing at rank 0.
    got = retrieval_recall(np.full((2, 2), 0.5), np.array([0, 1]))
    assert got["i2t_r1"] == 0.0 and got["t2i_r1"] == 0.0
    assert got["i2t_r5"] == 100.0  # rank 1 < 5
    # Image 0 has two captions tied at its best score; they do not count against it, but a
    # negative tied with them does.
    t2i = np.array([0, 0, 1])
    img, _ = retrieval_ranks(np.array([[0.7, 0.7, 0.6], [0.0, 0.0, 1.0]]), t2i)
    assert img[0] == 0
    img, txt = retrieval_ranks(np.array([[0.7, 0.7, 0.7], [0.7, 0.0, 1.0]]), t2i)
    assert img[0] == 1  # the tied negative (caption 2) comes first
    assert txt[0] == 1  # image 1 ties with caption 0's own image


def test_recall_at_k_and_rank_stats_formula() -> None:
    ranks = np.array([0, 3, 12, 1, 4])
    assert recall_at_k(ranks, ks=(1, 5, 10)) == {1: 20.0, 5: 80.0, 10: 80.0}
    rng = np.random.default_rng(2)
    t2i = np.repeat(np.arange(30), 5)
    sim = rng.standard_normal((30, 150))
    img, txt = vsepp_ranks(sim, t2i)
    stats = retrieval_rank_stats(sim, t2i)
    assert stats["i2t_medr"] == np.floor(np.median(img)) + 1
    assert stats["t2i_medr"] == np.floor(np.median(txt)) + 1
    assert stats["i2t_meanr"] == pytest.approx(img.mean() + 1)
    assert stats["t2i_meanr"] == pytest.approx(txt.mean() + 1)


def test_integer_similarity_and_large_chunks_agree() -> None:
    rng = np.random.default_rng(3)
    t2i = rng.permutation(np.repeat(np.arange(50), 3))
    sim = rng.integers(-5, 6, size=(50, 150))
    ref = retrieval_ranks(sim.astype(np.float64), t2i, chunk_size=3)
    got = retrieval_ranks(sim, t2i)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


@pytest.mark.slow
def test_5000_by_25000_runs_chunked() -> None:
    n_images, per = 5000, 5
    t2i = np.repeat(np.arange(n_images), per)
    rng = np.random.default_rng(4)
    sim = rng.random((n_images, n_images * per), dtype=np.float32)
    # Caption 5i is the best match of image i; caption 5i+1 is its image's best in its column.
    sim[np.arange(n_images), np.arange(n_images) * per] = 2.0
    sim[np.arange(n_images), np.arange(n_images) * per + 1] = 1.5
    got = retrieval_recall(sim, t2i)
    assert got["i2t_r1"] == 100.0
    img, txt = retrieval_ranks(sim, t2i)
    assert np.all(img == 0)
    assert np.all(txt[0::per] == 0) and np.all(txt[1::per] == 0)
    # The other captions rank by their uniform own score: about (1 - s) * n_images above them.
    s = sim[t2i[2::per], np.arange(2, t2i.size, per)]
    expected = (1 - s) * (n_images - 1)
    assert np.abs(txt[2::per] - expected).mean() < 50


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("sim", "t2i", "message"),
    [
        (np.zeros(3), np.array([0, 1, 2]), "2-D"),
        (np.zeros((2, 3)), np.array([0, 1]), "one entry per text"),
        (np.zeros((2, 3)), np.array([0, 1, 2]), r"text_to_image\[2\] = 2"),
        (np.zeros((2, 3)), np.array([0, 0, -1]), r"text_to_image\[2\] = -1"),
        (np.zeros((2, 3)), np.array([0.0, 1.0, 1.0]), "integer"),
        (np.zeros((3, 3)), np.array([0, 0, 1]), "1 image.*no caption.*rows 2"),
        (np.array([[np.nan, 0.0], [0.0, 1.0]]), np.array([0, 1]), "NaN"),
        (np.zeros((0, 0)), np.array([], dtype=int), "empty"),
    ],
)
def test_bad_input_raises(sim, t2i, message) -> None:
    with pytest.raises(ValueError, match=message):
        retrieval_recall(sim, t2i)


def test_bad_k_and_chunk_raise() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        recall_at_k(np.array([0, 1]), ks=(0,))
    with pytest.raises(ValueError, match="chunk_size"):
        retrieval_ranks(np.eye(2), np.array([0, 1]), chunk_size=0)

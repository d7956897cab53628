"""The one ranking primitive against a slow obvious reference: ``sorted`` over (-score, position)."""

from __future__ import annotations

import numpy as np
import pytest

from xmodal.search.ranking import best_first, top_k


def reference(
    scores: np.ndarray, positions: np.ndarray, k: int, higher_better: bool
) -> list[list[int]]:
    """Each row's entries sorted by (padding, worse score, position), first ``k`` kept."""
    out = []
    for s_row, p_row in zip(scores.tolist(), positions.tolist(), strict=True):
        entries = sorted(
            zip(s_row, p_row, strict=True),
            key=lambda e: (e[1] < 0, -e[0] if higher_better else e[0], e[1]),
        )
        out.append([p for _, p in entries[:k]])
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("higher_better", [True, False])
@pytest.mark.parametrize("k", [1, 3, 7, 12, 40])
def test_matches_brute_force_with_ties_and_padding(
    dtype: type, higher_better: bool, k: int
) -> None:
    rng = np.random.default_rng(k)
    q, m = 25, 12
    # few distinct values: many ties; negative and positive scores; -0.0 beside 0.0
    values = (
        np.array([-2.5, -1.0, -0.0, 0.0, 0.5, 3.0]) if dtype == np.float32 else np.arange(-3, 3)
    )
    scores = values[rng.integers(0, len(values), (q, m))].astype(dtype)
    positions = np.stack([rng.permutation(1000)[:m] for _ in range(q)])
    positions[rng.random((q, m)) < 0.2] = -1  # padding, anywhere in the row
    got_s, got_p = top_k(scores, positions, k, higher_better=higher_better)
    want = reference(scores, positions, k, higher_better)
    assert got_p.tolist() == want
    order = best_first(scores, positions, k, higher_better=higher_better)
    assert np.take_along_axis(positions, order, 1).tolist() == want
    assert got_p.shape == (q, min(k, m))
    for row in range(q):
        for j, pos in enumerate(got_p[row].tolist()):
            if pos < 0:
                worst = (
                    (-np.inf if higher_better else np.inf)
                    if dtype == np.float32
                    else (np.iinfo(dtype).min if higher_better else np.iinfo(dtype).max)
                )
                assert got_s[row, j] == worst
            else:
                col = positions[row].tolist().index(pos)
                assert got_s[row, j] == scores[row, col]


def test_shared_positions_and_order_indices() -> None:
    scores = np.array([[0.1, 0.9, 0.9, -1.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    positions = np.array([30, 20, 10, 0])  # one candidate list for every query
    order = best_first(scores, positions, 3)
    assert order.tolist() == [[2, 1, 0], [3, 2, 1]]
    s, p = top_k(scores, positions, 10)
    assert p.tolist() == [[10, 20, 30, 0], [0, 10, 20, 30]]
    assert s.shape == (2, 4) and top_k(scores, positions, 0)[1].shape == (2, 0)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="float32 or integer"):
        top_k(np.zeros((1, 2)), np.zeros(2, np.int64), 1)
    with pytest.raises(ValueError, match=r"\[q, m\]"):
        top_k(np.zeros(3, np.float32), np.zeros(3, np.int64), 1)
    with pytest.raises(ValueError, match="below 2\\*\\*32"):
        top_k(np.zeros((1, 1), np.float32), np.array([1 << 33]), 1)

"""Hamming distances, code packing and Hamming mAP against naive loops."""

from __future__ import annotations

import numpy as np
import pytest

from xmodal.evaluation import (
    hamming_distance,
    hamming_scores,
    mean_average_precision,
    pack_codes,
    unpack_codes,
)


def naive_hamming(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Distance as a count of differing signs, one pair at a time."""
    out = np.zeros((q.shape[0], d.shape[0]), dtype=np.int64)
    for i in range(q.shape[0]):
        for j in range(d.shape[0]):
            out[i, j] = sum(1 for a, b in zip(q[i], d[j], strict=True) if (a > 0) != (b > 0))
    return out


def random_signs(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    return np.where(rng.random((n, bits)) < 0.5, 1, -1).astype(np.int8)


@pytest.mark.parametrize("bits", [16, 32, 64, 128, 12, 100])
def test_distance_matches_naive_for_every_input_form(bits) -> None:
    rng = np.random.default_rng(bits)
    q, d = random_signs(rng, 9, bits), random_signs(rng, 23, bits)
    ref = naive_hamming(q, d)
    forms = {
        "signed int8": (q, d),
        "signed float32": (q.astype(np.float32), d.astype(np.float32)),
        "0/1 int64": ((q > 0).astype(np.int64), (d > 0).astype(np.int64)),
        "bool": (q > 0, d > 0),
        "packed": (pack_codes(q), pack_codes(d)),
        "mixed": (pack_codes(q), d.astype(np.float64)),
    }
    for name, (qq, dd) in forms.items():
        got = hamming_distance(qq, dd)
        assert got.dtype == np.int32, name
        np.testing.assert_array_equal(got, ref, err_msg=name)
    np.testing.assert_array_equal(hamming_distance(q, d, chunk_size=2), ref)
    np.testing.assert_array_equal(
        hamming_distance((q > 0).astype(np.uint8), (d > 0).astype(np.uint8), packed=False), ref
    )


def test_scores_are_negative_distances() -> None:
    rng = np.random.default_rng(1)
    q, d = random_signs(rng, 5, 32), random_signs(rng, 7, 32)
    scores = hamming_scores(q, d)
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores, -naive_hamming(q, d))


def test_pack_bit_order_and_round_trip() -> None:
    # numpy's default big bit order: code bit 0 is the most significant bit of byte 0.
    np.testing.assert_array_equal(pack_codes(np.array([[1, 0, 0, 0, 0, 0, 0, 0, 1]])), [[128, 128]])
    np.testing.assert_array_equal(pack_codes(np.array([[-1] * 7 + [1]])), [[1]])
    rng = np.random.default_rng(2)
    codes = random_signs(rng, 6, 20)
    packed = pack_codes(codes)
    assert packed.shape == (6, 3) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_codes(packed, 20, signed=True), codes)
    np.testing.assert_array_equal(unpack_codes(packed, 20), (codes > 0).astype(np.int8))
    assert unpack_codes(packed).shape == (6, 24)


def test_hamming_map_matches_ranking_by_ascending_distance() -> None:
    rng = np.random.default_rng(3)
    q, d = random_signs(rng, 20, 16), random_signs(rng, 60, 16)
    rel = rng.random((20, 60)) < 0.25
    dist = naive_hamming(q, d)
    aps = []
    for i in range(20):
        order = sorted(range(60), key=lambda j, i=i: (dist[i, j], j))  # stable by index
        hits, total = 0, 0.0
        for rank, j in enumerate(order, start=1):
            if rel[i, j]:
                hits += 1
                total += hits / rank
        aps.append(total / hits if hits else 0.0)
    got = mean_average_precision(hamming_scores(q, d), rel, ties="index")
    assert got == pytest.approx(np.mean(aps), abs=1e-12)


@pytest.mark.parametrize(
    ("q", "d", "kwargs", "message"),
    [
        (np.ones((2, 8)), np.ones((2, 16)), {}, "query_codes have 8 bits per row but db_codes"),
        (np.ones((2, 12)), np.ones((2, 16)), {}, "12 bits"),
        (
            np.ones((2, 2), np.uint8),
            np.ones((2, 3), np.uint8),
            {},
            "2 packed bytes.*3 packed bytes",
        ),
        (np.array([[0, 1, 2]]), np.ones((1, 3)), {}, r"query_codes must hold only \{-1, \+1\}"),
        (np.array([[-1, 0, 1]]), np.ones((1, 3)), {}, "query_codes must hold only"),
        (np.ones(8), np.ones((1, 8)), {}, "2-D"),
        (np.ones((2, 8)), np.ones((2, 8)), {"packed": True}, "packed query_codes must be"),
        (np.ones((2, 0)), np.ones((2, 0)), {}, "no bits"),
    ],
)
def test_bad_codes_raise(q, d, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        hamming_distance(q, d, **kwargs)


def test_unpack_validation() -> None:
    with pytest.raises(ValueError, match="uint8"):
        unpack_codes(np.ones((2, 2), np.int64))
    with pytest.raises(ValueError, match="bits=17 does not fit"):
        unpack_codes(np.ones((2, 2), np.uint8), 17)

"""Binary codes from float embeddings: random rotation and ITQ."""

from __future__ import annotations

import numpy as np
import pytest

from xmodal.evaluation import hamming_distance
from xmodal.index.codes import CodeRotation, fit_rotation


def clustered(
    n: int = 600, d: int = 32, k: int = 6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    labels = rng.integers(0, k, size=n)
    return centres[labels] + rng.normal(size=(n, d)), labels


def quantisation_error(rot: CodeRotation, x: np.ndarray) -> float:
    v = (x - rot.mean) @ rot.projection
    return float(np.mean((np.sign(v) - v / np.abs(v).mean()) ** 2))


@pytest.mark.parametrize("kind", ["random", "itq"])
def test_codes_are_plus_minus_one_and_round_trip(kind: str, tmp_path) -> None:
    x, _ = clustered()
    rot = fit_rotation(x, 16, kind=kind)
    codes = rot.encode(x)
    assert codes.shape == (600, 16) and set(np.unique(codes)) == {-1, 1}
    rot.save(str(tmp_path / "r.npz"))
    np.testing.assert_array_equal(CodeRotation.load(str(tmp_path / "r.npz")).encode(x), codes)


def test_itq_projection_is_pca_times_an_orthogonal_rotation() -> None:
    x, _ = clustered()
    rot = fit_rotation(x, 8, kind="itq")
    p = rot.projection.astype(np.float64)
    np.testing.assert_allclose(p.T @ p, np.eye(8), atol=1e-5)  # orthonormal columns


def test_itq_lowers_quantisation_error_against_its_starting_rotation() -> None:
    x, _ = clustered()
    start = fit_rotation(x, 16, kind="itq", iterations=0)
    fitted = fit_rotation(x, 16, kind="itq", iterations=50)
    assert quantisation_error(fitted, x) < quantisation_error(start, x)


def test_hamming_neighbours_keep_the_cluster_structure() -> None:
    x, labels = clustered()
    for kind in ("random", "itq"):
        codes = fit_rotation(x, 32, kind=kind).encode(x)
        dist = hamming_distance(codes, codes).astype(float)
        np.fill_diagonal(dist, np.inf)
        nearest = dist.argmin(axis=1)
        assert (labels[nearest] == labels).mean() > 0.9, kind


def test_bad_arguments_are_explained() -> None:
    x, _ = clustered(d=8)
    with pytest.raises(ValueError, match="bits <= embedding size"):
        fit_rotation(x, 16, kind="itq")
    with pytest.raises(ValueError, match="kind must be"):
        fit_rotation(x, 4, kind="lsh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \[n, 8\]"):
        fit_rotation(x, 4).encode(np.zeros((2, 3)))

"""Binary codes for any float embedding: sign of a random or a learned (ITQ) rotation.

Methods with their own hash head (``multitask``, ``crcgs``) produce codes directly; every other
method gets codes from here, so that every run can be searched and evaluated in Hamming space.

* ``random`` — ``sign(x·R)`` with ``R`` a random Gaussian ``[d, bits]`` projection,
  orthogonalised (sign random projections approximate angular distance; Charikar, 2002).
* ``itq`` — Iterative Quantisation (Gong & Lazebnik, 2011): PCA to ``bits`` dimensions, then an
  orthogonal rotation that minimises the quantisation error ``‖B − V·R‖²``, alternating the
  codes ``B = sign(V·R)`` and the Procrustes solution for ``R``. Fitted on training embeddings of
  both modalities together, so image and text codes share one rotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

__all__ = ["CodeRotation", "fit_rotation"]

RotationKind = Literal["random", "itq"]


@dataclass(frozen=True)
class CodeRotation:
    """A fitted map from float embeddings to ``{-1, +1}`` codes: ``sign((x − mean) · projection)``.

    Attributes:
        mean: ``[d]`` centring vector.
        projection: ``[d, bits]`` projection (PCA followed by the rotation).
        kind: How it was made.
    """

    mean: np.ndarray
    projection: np.ndarray
    kind: str

    @property
    def bits(self) -> int:
        return int(self.projection.shape[1])

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """``[n, d]`` float embeddings -> ``[n, bits]`` int8 codes in {-1, +1} (0 maps to +1)."""
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"expected embeddings of shape [n, {self.mean.shape[0]}], got {x.shape}"
            )
        return np.where((x - self.mean) @ self.projection >= 0, 1, -1).astype(np.int8)

    def save(self, path: str | Path | BinaryIO) -> None:
        """Write to an ``.npz`` file (a path or a binary file object)."""
        np.savez(path, mean=self.mean, projection=self.projection, kind=np.array(self.kind))

    @classmethod
    def load(cls, path: str | Path | BinaryIO) -> CodeRotation:
        """Read from an ``.npz`` file written by :meth:`save` (a path or a binary file object)."""
        with np.load(path) as z:
            return cls(z["mean"], z["projection"], str(z["kind"]))


def fit_rotation(
    embeddings: np.ndarray,
    bits: int,
    kind: RotationKind = "itq",
    iterations: int = 50,
    seed: int = 0,
) -> CodeRotation:
    """Fit a code rotation on training embeddings ``[n, d]``.

    Raises:
        ValueError: ``bits`` is not positive, or larger than ``d`` for ``itq`` (PCA needs
            ``bits ≤ d``), or the kind is unknown.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need at least two embeddings of shape [n, d], got {x.shape}")
    if bits < 1:
        raise ValueError(f"bits must be >= 1, got {bits}")
    rng = np.random.default_rng(seed)
    mean = x.mean(axis=0)
    d = x.shape[1]
    if kind == "random":
        g = rng.standard_normal((d, bits))
        if bits <= d:
            g, _ = np.linalg.qr(g)
        return CodeRotation(mean.astype(np.float32), g.astype(np.float32), "random")
    if kind != "itq":
        raise ValueError(f"kind must be 'random' or 'itq', got {kind!r}")
    if bits > d:
        raise ValueError(f"itq needs bits <= embedding size ({d}), got {bits}")
    xc = x - mean
    # PCA: top principal directions of the centred embeddings
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    pca = vt[:bits].T
    v = xc @ pca
    r, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
    for _ in range(iterations):
        b = np.where(v @ r >= 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(b.T @ v)
        r = (u @ wt).T
    return CodeRotation(mean.astype(np.float32), (pca @ r).astype(np.float32), "itq")

"""Input checks shared by the metric modules."""

from __future__ import annotations

import numpy as np

__all__ = ["real_matrix"]


def real_matrix(x: np.ndarray, name: str, layout: str) -> np.ndarray:
    """``x`` as a non-empty 2-D array of real numbers (neither bool nor complex).

    Args:
        x: The array to check.
        name: Its argument name, for the messages.
        layout: Its rows and columns in words, e.g. ``"[n_query, n_db]"``.

    Raises:
        ValueError: naming ``name`` and what is wrong.
    """
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D {layout}, got shape {a.shape}")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}); need at least one row and column")
    return a

"""PNG plots of evaluation results (precision-recall curves, Recall@K).

matplotlib is imported inside the functions and drives an Agg canvas directly (no ``pyplot``,
no global backend switch), so importing :mod:`xmodal.evaluation` stays cheap and plotting is
safe in headless and threaded programs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_precision_recall", "plot_recall_at_k"]


def plot_precision_recall(
    curves: Mapping[str, Sequence[Any]],
    path: str | Path,
    *,
    title: str = "Precision-recall",
) -> Path:
    """Draw one precision-recall line per entry and write a PNG.

    Args:
        curves: ``{label: (precision, recall, ...)}``; a :class:`~xmodal.evaluation.PRCurve`
            works as the value. Points with NaN precision or recall are left out.
        path: Output PNG path (parent folders are created).
        title: Figure title.

    Returns:
        The written path.

    Raises:
        ValueError: if ``curves`` is empty or a precision / recall pair differ in length.
    """
    if not curves:
        raise ValueError("curves is empty; nothing to plot")
    fig, ax = _figure()
    for label, curve in curves.items():
        precision = np.asarray(curve[0], dtype=np.float64)
        recall = np.asarray(curve[1], dtype=np.float64)
        if precision.shape != recall.shape or precision.ndim != 1:
            raise ValueError(
                f"curve {label!r}: precision {precision.shape} and recall {recall.shape} "
                "must be 1-D arrays of one length"
            )
        ok = np.isfinite(precision) & np.isfinite(recall)
        ax.plot(recall[ok], precision[ok], marker=".", label=str(label))
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    return _save(fig, ax, path, title)


def plot_recall_at_k(
    recalls: Mapping[str, Mapping[int, float]],
    path: str | Path,
    *,
    title: str = "Recall@K",
) -> Path:
    """Draw Recall@K (percent) against K, one line per entry, and write a PNG.

    Args:
        recalls: ``{label: {k: recall_percent}}``, e.g. ``{"t2i": recall_at_k(text_ranks)}``.
        path: Output PNG path (parent folders are created).
        title: Figure title.

    Returns:
        The written path.

    Raises:
        ValueError: if ``recalls`` or one of its entries is empty.
    """
    if not recalls:
        raise ValueError("recalls is empty; nothing to plot")
    fig, ax = _figure()
    for label, by_k in recalls.items():
        if not by_k:
            raise ValueError(f"recalls[{label!r}] is empty")
        ks = sorted(by_k)
        ax.plot(ks, [by_k[k] for k in ks], marker="o", label=str(label))
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K (%)")
    ax.set_ylim(0.0, 101.0)
    return _save(fig, ax, path, title)


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Any, ax: Any, path: str | Path, title: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(out, format="png")
    return out

"""Retrieval metrics, exact and tested against independent references.

* :mod:`~xmodal.evaluation.recall` — Recall@{1,5,10}, rsum, median / mean rank for caption
  retrieval (ties counted against the query).
* :mod:`~xmodal.evaluation.average_precision` — mAP@all / mAP@k, tie-aware (``ties="average"``)
  or index-ordered (``ties="index"``), label relevance, the four cross-modal directions.
* :mod:`~xmodal.evaluation.hamming` — packing binary codes, Hamming distances and scores.
* :mod:`~xmodal.evaluation.curves` — precision@k and precision-recall curves (Hamming radius or
  top-k).
* :mod:`~xmodal.evaluation.plots` — PNG plots (matplotlib imported lazily).

All functions are pure: arrays in, numbers or arrays out. Scores are "higher = better"
everywhere; Hamming retrieval passes ``hamming_scores`` (= -distance).
"""

from xmodal.evaluation.average_precision import (
    Ties,
    average_precision_per_query,
    cross_modal_map,
    mean_average_precision,
    relevance_from_labels,
)
from xmodal.evaluation.curves import (
    PRCurve,
    hamming_precision_recall,
    precision_at_k,
    precision_recall_curve,
    topk_precision_recall,
)
from xmodal.evaluation.hamming import hamming_distance, hamming_scores, pack_codes, unpack_codes
from xmodal.evaluation.plots import plot_precision_recall, plot_recall_at_k
from xmodal.evaluation.recall import (
    recall_at_k,
    retrieval_rank_stats,
    retrieval_ranks,
    retrieval_recall,
)

__all__ = [
    "PRCurve",
    "Ties",
    "average_precision_per_query",
    "cross_modal_map",
    "hamming_distance",
    "hamming_precision_recall",
    "hamming_scores",
    "mean_average_precision",
    "pack_codes",
    "plot_precision_recall",
    "plot_recall_at_k",
    "precision_at_k",
    "precision_recall_curve",
    "recall_at_k",
    "relevance_from_labels",
    "retrieval_rank_stats",
    "retrieval_ranks",
    "retrieval_recall",
    "topk_precision_recall",
    "unpack_codes",
]

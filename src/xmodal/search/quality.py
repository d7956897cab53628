"""Retrieval metrics computed from an index's own rankings.

Every indexed image queries the caption rows and every caption queries the image rows (and each
modality itself, for mAP), through :meth:`Searcher.search` with ``k`` = all rows (or fewer) and
the query's modality (so an index with a query bank ranks as its run was evaluated); the scores
the index returns are put back into score matrices and handed to the metric functions of
:mod:`xmodal.evaluation` — the same definitions ``xmodal evaluate`` uses. On an index of a run's
test split with exact (``flat``) indexes, ``float`` mode reproduces ``xmodal evaluate``; other
modes and kinds measure what the index loses (rows a search does not return score ``-inf``).
"""

from __future__ import annotations

import numpy as np

from xmodal.evaluation import mean_average_precision, relevance_from_labels, retrieval_recall
from xmodal.search.engine import Mode
from xmodal.search.searcher import Searcher, Target

__all__ = ["index_metrics"]


def _scores(
    searcher: Searcher,
    source: Target,
    target: Target,
    mode: Mode,
    candidates: int,
    k: int | None = None,
) -> np.ndarray:
    """``[n_source, n_target]`` scores of every source row against every target row."""
    snap = searcher.snapshot
    src, dst = snap.collections[source], snap.collections[target]
    n_src, n_dst = len(src), len(dst)
    out = np.full((n_src, n_dst), -np.inf, dtype=np.float64)
    if n_src == 0 or n_dst == 0:
        return out
    vectors = np.ascontiguousarray(src.vectors, dtype=np.float32)
    codes = np.ascontiguousarray(src.codes)
    hits = searcher.search(
        target,
        vectors=vectors,
        codes=codes,
        k=n_dst if k is None else min(k, n_dst),
        mode=mode,
        candidates=candidates,
        query_modality=source,
    )
    ids = hits.ids.ravel()
    valid = ids >= 0
    rows = np.repeat(np.arange(n_src), hits.ids.shape[1])[valid]
    out[rows, dst.positions(ids[valid])] = hits.scores.ravel()[valid]
    return out


def _off_diagonal(m: np.ndarray) -> np.ndarray:
    n = m.shape[0]
    return m[~np.eye(n, dtype=bool)].reshape(n, n - 1)


def index_metrics(
    searcher: Searcher,
    mode: Mode = "float",
    *,
    candidates: int = 1000,
    with_map: bool = True,
    k: int | None = None,
) -> dict[str, float]:
    """Recall@{1,5,10} both ways and rsum (and, with labels, mAP in four directions) of the
    indexed items, from the index's rankings.

    ``k`` caps the rows each cross-modal search returns (``None``: all), e.g. ``k=10`` measures
    recalls as top-10 searches return them (rows not returned score ``-inf``).

    Definitions are :func:`~xmodal.evaluation.retrieval_recall` and
    :func:`~xmodal.evaluation.mean_average_precision` (ties averaged; a caption inherits its
    item's labels; ``i2i`` and ``t2t`` leave the query out).

    Raises:
        ValueError: the index has no captions (nothing to pair images with).
    """
    snap = searcher.snapshot
    images, texts = snap.collections["image"], snap.collections["text"]
    if len(texts) == 0 or len(images) == 0:
        raise ValueError("the index needs images and captions to measure retrieval")
    text_meta = snap.meta.texts(texts.ids.tolist())
    owner_ids = np.asarray([text_meta[int(t)].item for t in texts.ids], dtype=np.int64)
    owner = images.positions(owner_ids)
    if len(owner) != len(texts):
        raise ValueError("some captions belong to items without an image row")
    i2t = _scores(searcher, "image", "text", mode, candidates, k)
    t2i = _scores(searcher, "text", "image", mode, candidates, k)
    metrics = {k: v for k, v in retrieval_recall(i2t, owner).items() if k.startswith("i2t")}
    metrics.update({k: v for k, v in retrieval_recall(t2i.T, owner).items() if k.startswith("t2i")})
    metrics["rsum"] = float(sum(v for k, v in metrics.items() if "_r" in k))
    items = snap.meta.items(images.ids.tolist())
    names = sorted({lab for it in items.values() for lab in it.labels})
    if with_map and names:
        col = {n: j for j, n in enumerate(names)}
        image_labels = np.zeros((len(images), len(names)), dtype=bool)
        for i, iid in enumerate(images.ids.tolist()):
            for lab in items[iid].labels:
                image_labels[i, col[lab]] = True
        text_labels = image_labels[owner]
        i2i = _off_diagonal(_scores(searcher, "image", "image", mode, candidates))
        t2t = _off_diagonal(_scores(searcher, "text", "text", mode, candidates))
        rel_it = relevance_from_labels(image_labels, text_labels)
        metrics["map_i2t"] = mean_average_precision(i2t, rel_it)
        metrics["map_t2i"] = mean_average_precision(t2i, rel_it.T)
        metrics["map_i2i"] = mean_average_precision(
            i2i, _off_diagonal(relevance_from_labels(image_labels, image_labels))
        )
        metrics["map_t2t"] = mean_average_precision(
            t2t, _off_diagonal(relevance_from_labels(text_labels, text_labels))
        )
    return {k: float(v) for k, v in metrics.items()}

"""Typed search results: :class:`Hits` (arrays for a batch of queries) and :class:`Result` (one row).

Metadata (item id, source path, captions, labels) is read from the index's SQLite database only
when results are materialised (:meth:`Hits.results`), so a large batch costs no more than the
FAISS search until it is looked at.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from xmodal.index.snapshot import Snapshot

__all__ = ["Hits", "Result"]


@dataclass(frozen=True)
class Result:
    """One ranked row.

    Attributes:
        rank: 1-based rank.
        id: The item's id (its record id; for a caption row, the id of the caption's item).
        score: Higher is better: the inner product (cosine) in ``float`` and ``two-stage`` mode
            (plus the row's query-bank bias in cross-modal searches of an index that has a
            bank, :mod:`xmodal.querybank`), minus the Hamming distance in ``hamming`` mode.
        modality: ``image`` (an item's image row) or ``text`` (a caption row).
        row: Stable int64 id of the row (the item id for image rows, the caption id for text rows).
        image: Absolute path of the item's image, if it has one.
        caption: The matched caption (text rows).
        captions: All captions of the item.
        labels: The item's labels.
        distance: Hamming distance between the query's code and the row's (``hamming`` and
            ``two-stage`` modes), else ``None``.
    """

    rank: int
    id: str
    score: float
    modality: str
    row: int
    image: str | None
    caption: str | None
    captions: tuple[str, ...]
    labels: tuple[str, ...]
    distance: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        d = asdict(self)
        d["captions"], d["labels"] = list(self.captions), list(self.labels)
        return d


@dataclass(frozen=True)
class Hits:
    """The ranked rows of a batch of queries, as arrays.

    Attributes:
        target: ``image`` or ``text``: the collection searched.
        mode: ``float``, ``hamming`` or ``two-stage``.
        ids: ``[n_queries, k]`` stable row ids, ``-1`` where fewer than ``k`` rows matched.
        scores: ``[n_queries, k]`` float32 scores (``-inf`` in padding).
        distances: ``[n_queries, k]`` int32 Hamming distances (``-1`` in padding), or ``None``
            in ``float`` mode.
        snapshot: The index version searched (for metadata).
    """

    target: str
    mode: str
    ids: np.ndarray
    scores: np.ndarray
    distances: np.ndarray | None
    snapshot: Snapshot

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, i: int) -> list[Result]:
        return self.results([i])[0]

    def results(self, queries: list[int] | None = None) -> list[list[Result]]:
        """Materialise :class:`Result` lists for some queries (default all), one metadata read."""
        rows = list(range(len(self))) if queries is None else list(queries)
        wanted = np.unique(self.ids[rows]) if rows else np.zeros(0, np.int64)
        wanted = wanted[wanted >= 0].tolist()
        meta = self.snapshot.meta
        texts = meta.texts(wanted) if self.target == "text" else {}
        item_ids = [t.item for t in texts.values()] if self.target == "text" else wanted
        items = meta.items(sorted(set(item_ids)))
        out: list[list[Result]] = []
        for q in rows:
            results = []
            for j, rid in enumerate(self.ids[q].tolist()):
                if rid < 0:
                    break
                text = texts.get(rid)
                item = items[text.item if text is not None else rid]
                dist = None if self.distances is None else int(self.distances[q, j])
                results.append(
                    Result(
                        rank=j + 1,
                        id=item.key,
                        score=float(self.scores[q, j]),
                        modality=self.target,
                        row=int(rid),
                        image=item.path,
                        caption=text.caption if text is not None else None,
                        captions=item.captions,
                        labels=item.labels,
                        distance=dist,
                    )
                )
            out.append(results)
        return out

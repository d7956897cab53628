"""Query an index across modalities: :class:`Searcher` and its typed results.

* :class:`Searcher` — ``text_to_image``, ``image_to_text``, ``image_to_image``, ``text_to_text``
  (and ``search`` with precomputed vectors or codes), modes ``float`` / ``hamming`` /
  ``two-stage``, optional label filter.
* :class:`Result` — one ranked row with its metadata; :class:`Hits` — a batch, as arrays.
* :func:`index_metrics` — Recall@K / mAP computed from the index's own rankings.
* :func:`write_results_html` — a self-contained HTML page of results.
"""

from __future__ import annotations

from xmodal.search.engine import MODES, Mode
from xmodal.search.html import write_results_html
from xmodal.search.quality import index_metrics
from xmodal.search.results import Hits, Result
from xmodal.search.searcher import Searcher

__all__ = ["MODES", "Hits", "Mode", "Result", "Searcher", "index_metrics", "write_results_html"]

"""Mean average precision (mAP@all and mAP@k) for retrieval, exact under score ties.

Conventions (the same for real-valued and Hamming retrieval):

* ``scores[q, j]`` is how well database item ``j`` matches query ``q``; **higher is better**.
  For Hamming retrieval pass the negative distance (:func:`xmodal.evaluation.hamming_scores`).
* ``relevant[q, j]`` is ``True`` when item ``j`` is relevant to query ``q`` (for labelled data:
  :func:`relevance_from_labels`, "shares at least one label").
* AP of one query over a ranked list cut at ``k`` (``k=None``: the whole list)::

      AP@k = (1 / N_k) * sum_{i <= k, item i relevant} precision@i

  where ``N_k`` is the number of relevant items found in the top ``k`` (the convention of the
  DCMH / DJSRH / SSAH evaluation code). A query with ``N_k = 0`` has AP 0, and the mean runs over
  **all** queries, so such queries pull mAP down. For ``k=None`` (or ``k >= n_db``) ``N_k`` is the
  number of relevant items of the query and AP@k is the usual AP.

Ties (``ties=``):

* ``"index"``: tied items are ordered by database index, ascending (a stable sort of the scores,
  descending). This is what the published code does in effect, and what Hamming-ranking code
  does when it calls a stable ``argsort`` on distances.
* ``"average"`` (default): the **expected** AP over all orderings of tied items, each equally
  likely (tie-aware AP in the style of McSherry & Najork, ECIR 2008). It is a property of the
  scores alone, so it does not change when the database is permuted. Derivation, for one query:
  sort the distinct scores descending; a tie group ``g`` holds ``n`` items, ``r`` of them
  relevant, behind ``c`` items of strictly higher score that hold ``R`` relevant items. Under a
  random order of the group, a relevant item of the group sits at group position ``j`` (1..n)
  with probability ``1/n`` and then has, in expectation, ``(j - 1)(r - 1)/(n - 1)`` relevant
  group mates above it, so the expected sum of the precisions of the group's relevant items is::

      E_g(n, r) = (r / n) * sum_{j=1..n} (R + 1 + (j - 1)(r - 1)/(n - 1)) / (c + j)
                = (r / n) * ((R + 1) * S1 + (r - 1)/(n - 1) * S2),
      S1 = sum_{j=1..n} 1/(c + j),   S2 = sum_{j=1..n} (j - 1)/(c + j)

  (the second term is 0 when ``n = 1``). With ``k`` cutting through a group (``c < k < c + n``),
  ``m = k - c`` of its positions are inside the cut and the number ``X`` of its relevant items
  that land inside is hypergeometric: ``P(X = x) = C(r, x) C(n - r, m - x) / C(n, m)``. Given
  ``X = x``, those ``x`` items are a uniformly random arrangement over the ``m`` positions, so
  their expected precision sum is ``E_g(m, x)`` (with ``S1, S2`` summed over ``j = 1..m``).
  Groups wholly above the cut contribute their ``E_g`` whatever ``X`` is (their orders are
  independent of the cut group's order), and the denominator is ``N_k = R_cut + X`` with
  ``R_cut`` the relevant items above the cut group. Hence, exactly::

      E[AP@k] = sum_x P(X = x) * (sum_{g above} E_g + E_cut(m, x)) / (R_cut + x)

  with terms where ``R_cut + x = 0`` counting 0. For ``k=None`` the "cut group" is the last
  group, ``m = n`` and ``X = r`` surely, which gives McSherry & Najork's formula. Sums of
  ``1/(c + j)`` are taken position by position (``np.add.reduceat``), never as differences of
  harmonic numbers, so the result is accurate to rounding.

Everything is computed on chunks of query rows, so the memory is ``O(chunk * n_db)``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from xmodal.evaluation._checks import real_matrix
from xmodal.evaluation.hamming import _packed, hamming_distance

__all__ = [
    "Ties",
    "average_precision_per_query",
    "cross_modal_map",
    "mean_average_precision",
    "relevance_from_labels",
]

Ties = Literal["average", "index"]

#: Elements (rows x db items) in one chunk of the ranking computations.
_CHUNK_ELEMENTS = 1 << 21


def relevance_from_labels(query_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    """Multi-label relevance: ``True`` where a query and a database item share a label.

    Args:
        query_labels: ``[n_query, n_labels]`` bool (or 0/1) label matrix.
        db_labels: ``[n_db, n_labels]`` bool (or 0/1) label matrix.

    Returns:
        ``[n_query, n_db]`` bool matrix.

    Raises:
        ValueError: if either is not 2-D, the label counts differ, or a value is not 0/1.

    Example:
        >>> relevance_from_labels(np.array([[1, 0, 1]]), np.array([[0, 0, 1], [0, 1, 0]]))
        array([[ True, False]])
    """
    q = _as_bool_matrix(query_labels, "query_labels")
    d = _as_bool_matrix(db_labels, "db_labels")
    if q.shape[1] != d.shape[1]:
        raise ValueError(
            f"query_labels has {q.shape[1]} labels per row but db_labels has {d.shape[1]}"
        )
    # float32 matmul counts shared labels exactly (counts < 2**24) and is BLAS-fast.
    return (q.astype(np.float32) @ d.astype(np.float32).T) > 0


def average_precision_per_query(
    scores: np.ndarray,
    relevant: np.ndarray,
    k: int | None = None,
    ties: Ties = "average",
    *,
    chunk_size: int | None = None,
) -> np.ndarray:
    """AP (or AP@k) of every query; see the module docstring for the definition and ties.

    Args:
        scores: ``[n_query, n_db]`` scores, higher = better (no NaN).
        relevant: ``[n_query, n_db]`` bool (or 0/1) relevance.
        k: Cut-off (``None``: the whole ranking). ``k >= n_db`` is the same as ``None``.
        ties: ``"average"`` (expected AP over random orders of tied items) or ``"index"``
            (ties broken by database index, ascending).
        chunk_size: Query rows per chunk (default: about two million matrix elements per chunk).

    Returns:
        ``[n_query]`` float64 array of AP values in ``[0, 1]``; 0 for a query with no relevant
        item in its top ``k``.

    Raises:
        ValueError: on mismatched shapes, empty input, NaN scores, non-0/1 relevance, a
            non-positive ``k`` or an unknown ``ties``.

    Example:
        >>> average_precision_per_query(np.array([[3.0, 2.0, 1.0]]), np.array([[0, 1, 1]]))
        array([0.58333333])
    """
    s, rel = _check_scores_relevant(scores, relevant)
    n_query, n_db = s.shape
    kk = _check_k(k, n_db)
    _check_ties(ties)
    rows = _chunk_rows(chunk_size, n_db)
    out = np.empty(n_query, dtype=np.float64)
    for a in range(0, n_query, rows):
        b = min(a + rows, n_query)
        if ties == "index":
            out[a:b] = _ap_index(s[a:b], rel[a:b], kk)
        else:
            out[a:b] = _ap_average(s[a:b], rel[a:b], kk)
    return out


def mean_average_precision(
    scores: np.ndarray,
    relevant: np.ndarray,
    k: int | None = None,
    ties: Ties = "average",
    *,
    chunk_size: int | None = None,
) -> float:
    """mAP@all (``k=None``) or mAP@k: the mean of :func:`average_precision_per_query`.

    Example:
        >>> scores = np.array([[2.0, 1.0, 1.0]])   # items 1 and 2 tie
        >>> relevant = np.array([[False, True, False]])
        >>> round(mean_average_precision(scores, relevant), 6)   # (1/2 + 1/3) / 2
        0.416667
        >>> mean_average_precision(scores, relevant, ties="index")
        0.5
    """
    ap = average_precision_per_query(scores, relevant, k, ties, chunk_size=chunk_size)
    return float(ap.mean())


def cross_modal_map(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    image_labels: np.ndarray,
    text_labels: np.ndarray,
    k: int | None = None,
    hamming: bool = False,
    ties: Ties = "average",
    *,
    db_image_emb: np.ndarray | None = None,
    db_text_emb: np.ndarray | None = None,
    db_image_labels: np.ndarray | None = None,
    db_text_labels: np.ndarray | None = None,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """mAP (or mAP@k) in the four directions ``map_i2t, map_t2i, map_i2i, map_t2t``.

    Relevance is "shares at least one label". Scores are cosine similarities of real-valued
    embeddings (rows L2-normalised; an all-zero row scores 0 against everything), or negative
    Hamming distances of binary codes when ``hamming=True`` (any format
    :func:`~xmodal.evaluation.hamming_distance` accepts).

    Without ``db_*`` arguments the queries are also the database; then ``i2i`` and ``t2t`` leave
    each query out of its own database (the diagonal is removed, so every query ranks
    ``n - 1`` items), while ``i2t`` / ``t2i`` keep the paired item. With ``db_*`` arguments (all
    four) the queries search that separate retrieval set and nothing is removed.

    Args:
        image_emb: ``[n_images, d]`` image embeddings or codes (queries).
        text_emb: ``[n_texts, d]`` text embeddings or codes (queries).
        image_labels: ``[n_images, n_labels]`` bool labels.
        text_labels: ``[n_texts, n_labels]`` bool labels.
        k: Cut-off of mAP@k (``None``: mAP@all).
        hamming: Treat embeddings as binary codes and rank by Hamming distance.
        ties: See :func:`mean_average_precision`.
        db_image_emb: Optional separate database; give all four ``db_*`` or none.
        db_text_emb: See ``db_image_emb``.
        db_image_labels: See ``db_image_emb``.
        db_text_labels: See ``db_image_emb``.
        chunk_size: Query rows scored per chunk (bounds memory at ``chunk * n_db``).

    Raises:
        ValueError: on inconsistent row counts, embedding sizes or label counts.
    """
    given = [a is not None for a in (db_image_emb, db_text_emb, db_image_labels, db_text_labels)]
    if any(given) and not all(given):
        raise ValueError("give all four db_* arguments (a separate retrieval set) or none")
    queries = {
        "i": _side(image_emb, image_labels, "image_emb", "image_labels", hamming),
        "t": _side(text_emb, text_labels, "text_emb", "text_labels", hamming),
    }
    separate = False
    database = queries
    if (
        db_image_emb is not None
        and db_text_emb is not None
        and db_image_labels is not None
        and db_text_labels is not None
    ):
        separate = True
        database = {
            "i": _side(db_image_emb, db_image_labels, "db_image_emb", "db_image_labels", hamming),
            "t": _side(db_text_emb, db_text_labels, "db_text_emb", "db_text_labels", hamming),
        }
    sides = [*queries.items(), *(database.items() if separate else [])]
    widths = {name: emb.shape[1] for _, (emb, _, name) in sides}
    labels = {name: lab.shape[1] for _, (_, lab, name) in sides}
    if len(set(widths.values())) > 1:
        what = "packed code bytes" if hamming else "embedding dims"
        raise ValueError(f"{what} differ between inputs: {widths}")
    if len(set(labels.values())) > 1:
        raise ValueError(f"label counts differ between inputs: {labels}")

    out: dict[str, float] = {}
    for q_side, d_side in (("i", "t"), ("t", "i"), ("i", "i"), ("t", "t")):
        q_emb, q_lab, _ = queries[q_side]
        d_emb, d_lab, _ = database[d_side]
        leave_out = not separate and q_side == d_side
        ap = _direction_ap(q_emb, q_lab, d_emb, d_lab, k, hamming, ties, leave_out, chunk_size)
        out[f"map_{q_side}2{d_side}"] = float(ap.mean())
    return out


def _side(
    emb: np.ndarray, labels: np.ndarray, emb_name: str, label_name: str, hamming: bool
) -> tuple[np.ndarray, np.ndarray, str]:
    """Validated ``(normalised embeddings or packed codes, bool labels, name)``."""
    lab = _as_bool_matrix(labels, label_name)
    if hamming:
        codes, _ = _packed(emb, None, emb_name)
        e = codes
    else:
        e = np.asarray(emb)
        if e.ndim != 2 or e.dtype == bool or not np.issubdtype(e.dtype, np.number):
            raise ValueError(f"{emb_name} must be a 2-D numeric array, got {e.dtype} {e.shape}")
        e = e.astype(np.promote_types(e.dtype, np.float32))
        if not np.isfinite(e).all():
            raise ValueError(f"{emb_name} contains NaN or infinite values")
        norms = np.linalg.norm(e, axis=1, keepdims=True)
        e = np.divide(e, norms, out=np.zeros_like(e), where=norms > 0)
    if e.shape[0] != lab.shape[0]:
        raise ValueError(
            f"{emb_name} has {e.shape[0]} rows but {label_name} has {lab.shape[0]}; they must match"
        )
    if e.shape[0] == 0:
        raise ValueError(f"{emb_name} is empty")
    return e, lab, emb_name


def _direction_ap(
    q_emb: np.ndarray,
    q_lab: np.ndarray,
    d_emb: np.ndarray,
    d_lab: np.ndarray,
    k: int | None,
    hamming: bool,
    ties: Ties,
    leave_out: bool,
    chunk_size: int | None,
) -> np.ndarray:
    n_query, n_db = q_emb.shape[0], d_emb.shape[0]
    if leave_out and n_db < 2:
        raise ValueError("need at least 2 items to evaluate a modality against itself")
    rows = _chunk_rows(chunk_size, n_db)
    out = np.empty(n_query, dtype=np.float64)
    for a in range(0, n_query, rows):
        b = min(a + rows, n_query)
        if hamming:
            scores = -hamming_distance(q_emb[a:b], d_emb, packed=True)
        else:
            scores = q_emb[a:b] @ d_emb.T
        rel = relevance_from_labels(q_lab[a:b], d_lab)
        if leave_out:
            keep = np.ones((b - a, n_db), dtype=bool)
            keep[np.arange(b - a), np.arange(a, b)] = False
            scores = scores[keep].reshape(b - a, n_db - 1)
            rel = rel[keep].reshape(b - a, n_db - 1)
        out[a:b] = average_precision_per_query(scores, rel, k, ties)
    return out


# --------------------------------------------------------------------------- input checks


def _check_scores_relevant(
    scores: np.ndarray, relevant: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a ``(scores, relevant)`` pair; returns ``(scores, relevant as bool)``."""
    s = real_matrix(scores, "scores", "[n_query, n_db]")
    rel = _as_bool_matrix(relevant, "relevant")
    if rel.shape != s.shape:
        raise ValueError(
            f"scores has shape {s.shape} but relevant has shape {rel.shape}; they must match"
        )
    if np.issubdtype(s.dtype, np.floating) and np.isnan(s).any():
        raise ValueError("scores contains NaN; every score must be comparable")
    return s, rel


def _as_bool_matrix(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    if a.dtype == bool:
        return a
    if not np.issubdtype(a.dtype, np.number) or not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must be bool or hold only 0/1 values")
    return a.astype(bool)


def _check_k(k: int | None, n_db: int) -> int:
    if k is None:
        return n_db
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be a positive int or None, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return min(int(k), n_db)


def _check_ties(ties: str) -> None:
    if ties not in ("average", "index"):
        raise ValueError(f"ties must be 'average' or 'index', got {ties!r}")


def _chunk_rows(chunk_size: int | None, n_db: int) -> int:
    if chunk_size is None:
        return max(1, _CHUNK_ELEMENTS // max(n_db, 1))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return int(chunk_size)


# --------------------------------------------------------------------------- sorting


def _descending_order(scores: np.ndarray, stable: bool = True) -> np.ndarray:
    """Per-row order of ``scores``, descending; ties by column index ascending when ``stable``.

    Whole-number scores within a 16-bit range (Hamming) use numpy's radix sort; other rows are
    sorted with the fast unstable sort and only rows that turn out to hold ties are re-sorted
    stably.
    """
    s = scores.astype(np.int64) if np.issubdtype(scores.dtype, np.integer) else scores
    if _is_integral(s):
        top = s.max()
        if float(top) - float(s.min()) < 65536:
            return np.argsort((top - s).astype(np.uint16), axis=1, kind="stable")
    neg = -s
    order = np.argsort(neg, axis=1)
    if not stable:
        return order
    v = np.take_along_axis(neg, order, axis=1)
    tied_rows = np.flatnonzero((v[:, 1:] == v[:, :-1]).any(axis=1))
    if tied_rows.size:
        order[tied_rows] = np.argsort(neg[tied_rows], axis=1, kind="stable")
    return order


def _is_integral(s: np.ndarray) -> bool:
    """Integer dtype, or finite floats that are all whole numbers (e.g. -Hamming distances)."""
    if np.issubdtype(s.dtype, np.integer):
        return True
    first = s[:1]
    if not (np.isfinite(first).all() and np.all(first == np.rint(first))):
        return False
    return bool(np.isfinite(s).all() and np.all(s == np.rint(s)))


def _sorted_rows(
    scores: np.ndarray, relevant: np.ndarray, stable: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, relevant)`` with every row sorted by score, descending (see ``stable``)."""
    order = _descending_order(scores, stable)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(relevant, order, axis=1)


class _TieGroups:
    """Tie groups of row-sorted scores, flattened over a chunk of rows.

    Attributes (one entry per group, groups ordered by row then position):
        start: flat index of the group's first element in the ``[rows, n_db]`` chunk.
        row: the group's row.
        first: 0-based rank position of the group's first item (``c`` in the docstring).
        size: number of items ``n``.
        n_rel: number of relevant items ``r``.
        rel_before: relevant items strictly above the group in its row (``R``).
    """

    def __init__(self, sorted_scores: np.ndarray, sorted_relevant: np.ndarray) -> None:
        n_rows, n_db = sorted_scores.shape
        new = np.empty((n_rows, n_db), dtype=bool)
        new[:, 0] = True
        new[:, 1:] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
        self.n_db = n_db
        self.start = np.flatnonzero(new)
        self.row = self.start // n_db
        self.first = self.start % n_db
        self.size = np.diff(np.append(self.start, n_rows * n_db))
        rel = sorted_relevant.astype(np.int64)
        self.n_rel = np.add.reduceat(rel.ravel(), self.start)
        rel_before = np.cumsum(rel, axis=1) - rel
        self.rel_before = rel_before.ravel()[self.start]

    def containing(self, positions: np.ndarray) -> np.ndarray:
        """Group index holding 0-based rank ``positions[i]`` of row ``i`` (one per row)."""
        flat = np.arange(positions.shape[0]) * self.n_db + positions
        return np.searchsorted(self.start, flat, side="right") - 1


# --------------------------------------------------------------------------- AP kernels


def _ap_index(scores: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    _, rel = _sorted_rows(scores, relevant)
    rel = rel[:, :k].astype(np.float64)
    precision = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
    found = rel.sum(axis=1)
    total = (precision * rel).sum(axis=1)
    return np.divide(total, found, out=np.zeros_like(total), where=found > 0)


def _ap_average(scores: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """Expected AP@k over random orders of tied items (derivation: module docstring)."""
    from scipy.stats import hypergeom  # heavy import, only needed here

    n_rows, n_db = scores.shape
    ss, rr = _sorted_rows(scores, relevant, stable=False)
    g = _TieGroups(ss, rr)

    # Per-position sums S1 = sum 1/(p+1), S2 = sum (p-c)/(p+1) over each group's positions that
    # lie inside the cut (p < k): whole groups above the cut and the truncated cut group.
    pos = np.tile(np.arange(n_db, dtype=np.float64), n_rows)
    inv = 1.0 / (pos + 1.0)
    inside = pos < k
    first_at = np.repeat(g.first, g.size).astype(np.float64)
    s1 = np.add.reduceat(np.where(inside, inv, 0.0), g.start)
    s2 = np.add.reduceat(np.where(inside, (pos - first_at) * inv, 0.0), g.start)

    cut = g.containing(np.full(n_rows, k - 1))
    n = g.size.astype(np.float64)
    r = g.n_rel.astype(np.float64)
    before = g.rel_before.astype(np.float64)

    # Whole groups strictly above the cut group.
    whole = np.arange(g.start.size) < cut[g.row]
    e_whole = _expected_precision_sum(n, r, before, s1, s2)
    above = np.bincount(g.row[whole], weights=e_whole[whole], minlength=n_rows)

    # The cut group: X ~ Hypergeom(population n, successes r, draws m).
    n_c, r_c, m_c = g.size[cut], g.n_rel[cut], k - g.first[cut]
    lo = np.maximum(0, m_c - (n_c - r_c))
    hi = np.minimum(r_c, m_c)
    counts = hi - lo + 1
    row_x = np.repeat(np.arange(n_rows), counts)
    offsets = np.cumsum(counts) - counts
    x = (lo[row_x] + np.arange(row_x.size) - offsets[row_x]).astype(np.float64)
    pmf = hypergeom.pmf(x, n_c[row_x], r_c[row_x], m_c[row_x])
    before_c = before[cut][row_x]
    e_cut = _expected_precision_sum(
        m_c[row_x].astype(np.float64), x, before_c, s1[cut][row_x], s2[cut][row_x]
    )
    denom = before_c + x
    term = np.divide(pmf * (above[row_x] + e_cut), denom, out=np.zeros_like(denom), where=denom > 0)
    return np.bincount(row_x, weights=term, minlength=n_rows)


def _expected_precision_sum(
    n: np.ndarray, r: np.ndarray, before: np.ndarray, s1: np.ndarray, s2: np.ndarray
) -> np.ndarray:
    """``E_g(n, r) = r/n * ((R + 1) S1 + (r - 1)/(n - 1) S2)`` (0 when ``r = 0``)."""
    mate = np.divide(r - 1.0, n - 1.0, out=np.zeros_like(r), where=n > 1)
    return r / n * ((before + 1.0) * s1 + mate * s2)

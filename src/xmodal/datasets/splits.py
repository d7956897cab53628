"""Deterministic train / validation / test splits of a dataset, by record id.

* :func:`split_sorted` — the first ``sizes[0]`` ids in sorted order are train, the next
  ``sizes[1]`` validation, the next ``sizes[2]`` test. ``sizes=(700, 100, 200)`` on
  ``flickr8k-1k`` is the project's fixed protocol.
* :func:`split_random` — a permutation of the sorted ids by ``numpy.random.default_rng(seed)``.
* :func:`xmodal.datasets.karpathy_split` — the split stored in a Karpathy JSON.

A :class:`Split` holds id lists (each kept sorted), is saved with every run
(:meth:`Split.to_json`) and applied to a dataset with :meth:`Split.apply`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmodal.datasets.record import Dataset
from xmodal.errors import BadInputError

__all__ = ["FLICKR8K_1K_SIZES", "Split", "split_random", "split_sorted"]

#: The project's fixed flickr8k-1k protocol: 700 train / 100 val / 200 test by sorted id.
FLICKR8K_1K_SIZES = (700, 100, 200)

_PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Three disjoint lists of record ids.

    Raises:
        ValueError: an id appears twice (within or across parts) or is not a string.
    """

    train: list[str]
    val: list[str]
    test: list[str]

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for part in _PARTS:
            for rid in getattr(self, part):
                if not isinstance(rid, str):
                    raise ValueError(f"split ids must be strings; {part} holds {rid!r}")
                if rid in seen:
                    raise ValueError(f"id {rid!r} is in both {seen[rid]} and {part}")
                seen[rid] = part

    @property
    def sizes(self) -> tuple[int, int, int]:
        """``(len(train), len(val), len(test))``."""
        return len(self.train), len(self.val), len(self.test)

    def to_json(self, path: str | Path) -> None:
        """Write ``{"train": [...], "val": [...], "test": [...]}`` to ``path``."""
        payload = {part: list(getattr(self, part)) for part in _PARTS}
        Path(path).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, path: str | Path) -> Split:
        """Read a split written by :meth:`to_json`.

        Raises:
            BadInputError: the file is missing, not JSON, or not three lists of string ids.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise BadInputError(path, f"cannot read split file ({e})") from e
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadInputError(path, f"split file is not valid JSON ({e})") from e
        if not isinstance(data, dict) or any(not isinstance(data.get(p), list) for p in _PARTS):
            raise BadInputError(path, "split file needs 'train', 'val' and 'test' lists")
        try:
            return cls(**{p: list(data[p]) for p in _PARTS})
        except ValueError as e:
            raise BadInputError(path, str(e)) from e

    def apply(self, ds: Dataset) -> tuple[Dataset, Dataset, Dataset]:
        """``(train, val, test)`` datasets; records keep the dataset's order.

        Raises:
            ValueError: an id of the split is not in ``ds``.
        """
        index = {rid: i for i, rid in enumerate(ds.ids)}
        out = []
        for part in _PARTS:
            ids = getattr(self, part)
            missing = [rid for rid in ids if rid not in index]
            if missing:
                raise ValueError(
                    f"{len(missing)} {part} id(s) of the split are not in dataset "
                    f"{ds.name!r}, e.g. {missing[0]!r}"
                )
            out.append(ds.subset(sorted(index[rid] for rid in ids), name=f"{ds.name}-{part}"))
        return out[0], out[1], out[2]


def _sorted_ids(ds: Dataset | Sequence[str]) -> list[str]:
    ids = ds.ids if isinstance(ds, Dataset) else list(ds)
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique to be split")
    return sorted(ids)


def _check_sizes(sizes: Sequence[int], n: int) -> tuple[int, int, int]:
    is_int = [isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in sizes]
    if len(sizes) != 3 or not all(is_int):
        raise ValueError(f"sizes must be three integers (train, val, test), got {sizes!r}")
    a, b, c = (int(s) for s in sizes)
    if min(a, b, c) < 0:
        raise ValueError(f"sizes must be non-negative, got {sizes!r}")
    if a + b + c > n:
        raise ValueError(f"sizes {tuple(sizes)} add up to {a + b + c}, more than the {n} records")
    return a, b, c


def _cut(ids: list[str], sizes: tuple[int, int, int]) -> Split:
    a, b, c = sizes
    return Split(
        train=sorted(ids[:a]), val=sorted(ids[a : a + b]), test=sorted(ids[a + b : a + b + c])
    )


def split_sorted(ds: Dataset | Sequence[str], sizes: Sequence[int] = FLICKR8K_1K_SIZES) -> Split:
    """First ``sizes[0]`` sorted ids train, next ``sizes[1]`` val, next ``sizes[2]`` test.

    Ids past ``sum(sizes)`` are left out of every part.

    Raises:
        ValueError: ``sizes`` add up to more than the number of records, or are malformed.
    """
    ids = _sorted_ids(ds)
    return _cut(ids, _check_sizes(sizes, len(ids)))


def split_random(
    ds: Dataset | Sequence[str],
    fractions: Sequence[float] | None = None,
    *,
    sizes: Sequence[int] | None = None,
    seed: int = 0,
) -> Split:
    """A seeded random split: the sorted ids permuted by ``np.random.default_rng(seed)``, then
    cut into consecutive train / val / test blocks.

    Args:
        ds: The dataset (or its ids).
        fractions: Shares of the records, default ``(0.8, 0.1, 0.1)``. val and test get
            ``floor(f * n)`` records each; train gets the rest when the fractions add up to
            1, else ``floor(f_train * n)``.
        sizes: Exact counts instead of fractions (give one or the other).
        seed: Seed of the permutation.

    Raises:
        ValueError: both or malformed ``fractions``/``sizes``, or sizes over the record count.
    """
    ids = _sorted_ids(ds)
    n = len(ids)
    if fractions is not None and sizes is not None:
        raise ValueError("give fractions or sizes, not both")
    if sizes is None:
        sizes = _sizes_from_fractions((0.8, 0.1, 0.1) if fractions is None else fractions, n)
    counts = _check_sizes(sizes, n)
    order = np.random.default_rng(seed).permutation(n)
    return _cut([ids[i] for i in order], counts)


def _sizes_from_fractions(fractions: Sequence[float], n: int) -> tuple[int, int, int]:
    if len(fractions) != 3 or any(not math.isfinite(float(f)) or f < 0 for f in fractions):
        raise ValueError(f"fractions must be three non-negative numbers, got {fractions!r}")
    total = float(sum(fractions))
    if total > 1 + 1e-9:
        raise ValueError(f"fractions {tuple(fractions)} add up to {total}, more than 1")
    val, test = (math.floor(float(f) * n + 1e-9) for f in fractions[1:])
    if math.isclose(total, 1.0):
        train = n - val - test
    else:
        train = math.floor(float(fractions[0]) * n + 1e-9)
    return train, val, test

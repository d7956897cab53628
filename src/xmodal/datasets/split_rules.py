"""Split rules as strings, so that a CLI flag or a config file can name them.

* ``sorted:700,100,200`` — first 700 sorted ids train, next 100 val, next 200 test
* ``random:0.8,0.1,0.1`` (fractions) or ``random:700,100,200`` (sizes) — seeded permutation
* ``karpathy`` — the ``split`` field of a Karpathy JSON
* ``file:PATH`` — a ``split.json`` written by an earlier run
* ``auto`` — ``karpathy`` when the records carry a split, else ``random:0.8,0.1,0.1``
"""

from __future__ import annotations

from pathlib import Path

from xmodal.datasets import Dataset, Split, karpathy_split, split_random, split_sorted

__all__ = ["DEFAULT_SPLIT", "parse_split"]

DEFAULT_SPLIT = "auto"


def _numbers(text: str, rule: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"split rule {rule!r}: expected three comma-separated numbers") from None
    if len(values) != 3:
        raise ValueError(f"split rule {rule!r}: expected three numbers (train, val, test)")
    return values


def parse_split(rule: str, dataset: Dataset, seed: int = 0) -> Split:
    """Turn a split rule (see the module docstring) into the ids of each split of ``dataset``."""
    kind, _, arg = rule.partition(":")
    if kind == "auto":
        if dataset.records and all("split" in r.extra for r in dataset.records):
            return karpathy_split(dataset)
        return split_random(dataset, (0.8, 0.1, 0.1), seed=seed)
    if kind == "karpathy":
        return karpathy_split(dataset)
    if kind == "file":
        return Split.from_json(Path(arg))
    if kind == "sorted":
        return split_sorted(dataset, [int(v) for v in _numbers(arg, rule)])
    if kind == "random":
        values = _numbers(arg, rule)
        if all(v < 1 for v in values):
            return split_random(dataset, tuple(values), seed=seed)
        return split_random(dataset, sizes=[int(v) for v in values], seed=seed)
    raise ValueError(
        f"unknown split rule {rule!r}: use sorted:A,B,C, random:A,B,C, karpathy, file:PATH or auto"
    )

"""The examples in xmodal's docstrings run, offline and in seconds, and print what they show.

Every module under ``src/xmodal`` whose source holds ``>>>`` is collected, so a new example runs
without being listed here. Examples that need real weights or data say ``# doctest: +SKIP``.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import xmodal

ROOT = Path(xmodal.__file__).parent
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def modules_with_examples() -> list[str]:
    """Dotted names of the xmodal modules whose source holds a ``>>>`` prompt."""
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        if ">>>" in path.read_text(encoding="utf-8"):
            parts = path.relative_to(ROOT.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = modules_with_examples()


def run_examples(name: str) -> tuple[int, int, list[str]]:
    """Run one module's examples: ``(attempted, skipped, failure reports)``."""
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    reports: list[str] = []
    skipped = 0
    for test in doctest.DocTestFinder().find(module, name):
        skipped += sum(bool(ex.options.get(doctest.SKIP)) for ex in test.examples)
        runner.run(test, out=reports.append)
    return runner.tries, skipped, reports


def test_examples_are_found() -> None:
    # the metric modules carry most examples; losing them means the finder broke
    assert "xmodal.evaluation.recall" in MODULES
    assert len(MODULES) >= 8


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    attempted, skipped, reports = run_examples(name)
    assert attempted + skipped > 0, f"{name} has a '>>>' outside any docstring doctest finds"
    assert not reports, "\n".join(reports)

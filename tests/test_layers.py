"""The import rule of ``DESIGN.md``: imports point down the pipeline only.

Nothing under the stage packages imports the façade (``pipeline``), the CLI, the service or the
demo, and no stage imports a stage drawn to its right. Read from the source with ``ast``, so a
lazy import inside a function counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "xmodal"

#: Top-level names that only the outermost layer may import.
FACADE = {"pipeline", "cli", "serve", "demo"}

#: What each stage may not import (the stages drawn to its right in DESIGN.md).
FORBIDDEN = {
    "datasets": {
        "encoders",
        "features",
        "models",
        "methods",
        "training",
        "index",
        "search",
        "distributed",
    },
    "encoders": {"features", "methods", "training", "index", "search", "distributed"},
    "features": {"methods", "training", "index", "search"},
    "evaluation": {"training", "index", "search", "distributed", "datasets", "encoders"},
    "models": {"training", "index", "search", "distributed"},
    "methods": {"training", "index", "search"},
    "training": {"index", "search"},
    "index": set(),
    "search": set(),
    "distributed": set(),
}


def _imports(path: Path) -> set[str]:
    """The ``xmodal.<package>`` names a module imports (at any depth of the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "xmodal" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_stage_imports_point_down(package: str) -> None:
    bad = []
    for path in sorted((SRC / package).rglob("*.py")):
        wrong = _imports(path) & (FACADE | FORBIDDEN[package])
        bad += [f"{path.relative_to(SRC)} imports xmodal.{name}" for name in sorted(wrong)]
    assert not bad, "\n".join(bad)


def test_every_package_is_ruled() -> None:
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    assert packages - FACADE - {"demo_data"} <= set(FORBIDDEN), packages

"""The CLI's one error handler: a line and exit code 2 for what a user can fix (bad input, a missing
file or optional extra), exit code 1 without a traceback for a bug unless --debug or XMODAL_DEBUG
asks for it; and one version source."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

import xmodal
from xmodal.cli import app
from xmodal.errors import EXTRAS, MissingExtraError, missing_extra, user_message

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
DEMO = Path(xmodal.__file__).parent / "demo_data" / "openmoji"
# the distribution of pyproject.toml that installs each optional module
DISTRIBUTION = {
    "fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart",
    "python_multipart": "python-multipart", "prometheus_client": "prometheus-client",
    "ray": "ray", "open_clip": "open-clip-torch", "timm": "timm",
}  # fmt: skip


def without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``import module`` fail as if it were not installed."""
    for name in list(sys.modules):
        if name.split(".")[0] in modules:
            monkeypatch.delitem(sys.modules, name)
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip() and "Loading weights" not in line]
    assert len(lines) == 1, output
    return lines[0]


def test_version_is_the_package_metadata() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"xmodal {xmodal.__version__}"
    assert importlib.metadata.version("xmodal") == xmodal.__version__
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "version" in project["dynamic"] and "version" not in project


def test_every_extra_named_is_one_of_pyproject() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    for module, extra in EXTRAS.items():
        names = [re.split(r"[\[<>=~ ]", r, maxsplit=1)[0].lower() for r in extras[extra]]
        assert DISTRIBUTION[module] in names, (module, extra, names)


def test_missing_extra_is_found_behind_a_wrapping_error() -> None:
    try:
        try:
            raise ModuleNotFoundError("No module named 'timm'", name="timm")
        except ImportError as e:
            raise ImportError("timm is not installed") from e
    except ImportError as wrapped:
        found = missing_extra(wrapped, "xmodal train")
    assert isinstance(found, MissingExtraError) and found.extra == "clip"
    assert str(found) == (
        "xmodal train needs the clip extra (timm is not installed): pip install 'xmodal[clip]'"
    )
    assert missing_extra(ModuleNotFoundError("No module named 'numpy'", name="numpy")) is None
    assert user_message(KeyError("x")) is None


@pytest.mark.parametrize(
    ("args", "modules", "extra"),
    [
        (["serve", "{tmp}"], ("fastapi",), "serve"),
        (["demo", "--serve", "--out", "{tmp}/demo"], ("fastapi",), "serve"),
        (["encode", "--data", str(DEMO), "--ray", "--cache-dir", "{tmp}/c"], ("ray",), "scale"),
        (
            ["index", "build", "--data", str(DEMO), "--out", "{tmp}/ix", "--encoder",
             "open_clip:ViT-B-32", "--cache-dir", "{tmp}/c"],
            ("open_clip",),
            "clip",
        ),
        (
            ["train", "--data", str(DEMO), "--out", "{tmp}/run", "--image-encoder",
             "timm:resnet18", "--cache-dir", "{tmp}/c"],
            ("timm",),
            "clip",
        ),
    ],
)  # fmt: skip
def test_a_missing_extra_is_one_line_naming_it(
    args: list[str], modules: tuple[str, ...], extra: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    without(monkeypatch, *modules)
    result = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    line = one_line(result.output)
    assert line.startswith("error: ") and f"pip install 'xmodal[{extra}]'" in line, line


def test_a_missing_extra_of_index_build_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without(monkeypatch, "ray")
    result = runner.invoke(
        app,
        ["index", "build", "--data", str(DEMO), "--out", str(tmp_path / "ix"), "--ray"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "pip install 'xmodal[scale]'" in one_line(result.output)


def test_known_errors_are_one_line_with_code_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert one_line(result.output).startswith("error: ") and "nowhere" in result.output


def test_an_unexpected_error_hides_its_traceback_unless_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from xmodal import pipeline

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline, "evaluate", broken)
    result = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == 1
    line = one_line(result.output)
    assert "unexpected error: RuntimeError: a bug" in line and "--debug" in line
    assert "Traceback" not in result.output
    for args, env in ((["--debug", "evaluate", str(tmp_path)], {}),
                      (["evaluate", str(tmp_path)], {"XMODAL_DEBUG": "1"})):  # fmt: skip
        result = runner.invoke(app, args, env=env)
        assert isinstance(result.exception, RuntimeError), result.output

"""A run directory is checked on load: a corrupt, truncated, empty or altered ``model.pt`` and a
malformed ``config.json`` are errors naming the file, never a traceback or a silent result."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import openmoji_slice
from typer.testing import CliRunner

from xmodal.cli import app
from xmodal.errors import BadInputError
from xmodal.training.run import CHECKSUMS, load_method, verify_run

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``(run, data, cache)``: a 2-epoch tfidf run on 40 emoji."""
    root = tmp_path_factory.mktemp("integrity")
    data = openmoji_slice(root / "data", step=60)
    run, cache = root / "run", root / "cache"
    r = runner.invoke(app, [
        "train", "--data", str(data), "--out", str(run), "--epochs", "2", "--batch-size", "8",
        "--text-encoder", "tfidf", "--split", "random:0.6,0.2,0.2", "--cache-dir", str(cache),
        "--option", "embed_dim=16", "--device", "cpu",
    ])  # fmt: skip
    assert r.exit_code == 0, r.output
    return run, data, cache


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(run, out)
    return out


def _evaluate(run: Path, cache: Path):
    return runner.invoke(app, ["evaluate", str(run), "--json", "--cache-dir", str(cache)])


def test_the_manifest_lists_what_loading_reads(trained) -> None:
    run, _, cache = trained
    manifest = json.loads((run / CHECKSUMS).read_text())
    assert sorted(manifest["files"]) == [
        "config.json", "model.pt", "split.json", "text_encoder.state"
    ]  # fmt: skip
    assert manifest["files"]["model.pt"]["bytes"] == (run / "model.pt").stat().st_size
    assert verify_run(run) is True
    assert _evaluate(run, cache).exit_code == 0


def _garbage_floats(path: Path) -> None:
    data = bytearray(path.read_bytes())
    noise = np.random.default_rng(0).standard_normal(1024).astype(np.float32).tobytes()
    start = len(data) - 4096 - 512  # inside the tensor data, past the zip's headers
    data[start : start + 4096] = noise
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated"),
        (lambda p: p.write_bytes(np.random.default_rng(1).bytes(p.stat().st_size)), "SHA-256"),
        (lambda p: p.write_bytes(b""), "0 bytes"),
        (_garbage_floats, "SHA-256 does not match"),
    ],
    ids=["truncated", "random", "empty", "garbage-floats"],
)
def test_a_damaged_checkpoint_is_named(trained, tmp_path: Path, damage, words) -> None:
    run, _, cache = trained
    copy = _copy(run, tmp_path)
    damage(copy / "model.pt")
    with pytest.raises(BadInputError, match=words) as e:
        load_method(copy)
    assert e.value.path == copy / "model.pt"
    r = _evaluate(copy, cache)
    assert r.exit_code == 2 and "model.pt" in r.output and words in r.output
    assert "Traceback" not in r.output and "Aborted" not in r.output


@pytest.mark.filterwarnings("ignore:.*has no checksums.json")
def test_without_a_manifest_unreadable_checkpoints_are_still_named(trained, tmp_path) -> None:
    run, _, cache = trained
    copy = _copy(run, tmp_path)
    (copy / CHECKSUMS).unlink()
    with pytest.warns(UserWarning, match="not verified"):
        load_method(copy)
    model = copy / "model.pt"
    good = model.read_bytes()
    for data, words in (
        (good[: len(good) // 2], "not a readable checkpoint"),
        (np.random.default_rng(2).bytes(len(good)), "not a readable checkpoint"),
        (b"", "checkpoint is empty"),
    ):
        model.write_bytes(data)
        with pytest.raises(BadInputError, match=words) as e:
            load_method(copy)
        assert e.value.path == model
        r = _evaluate(copy, cache)
        assert r.exit_code == 2 and "model.pt" in r.output and "Traceback" not in r.output


class _RunsCode:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.filterwarnings("ignore:.*has no checksums.json")
def test_a_checkpoint_that_would_run_code_is_refused(trained, tmp_path: Path) -> None:
    import torch

    run, _, _ = trained
    copy = _copy(run, tmp_path)
    (copy / CHECKSUMS).unlink()  # a hostile folder rewrites the manifest anyway
    proof = tmp_path / "code-ran"
    torch.save({"x": _RunsCode(proof)}, copy / "model.pt", pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(BadInputError, match="not a readable checkpoint") as e:
        load_method(copy)
    assert e.value.path == copy / "model.pt" and not proof.exists()


def test_a_malformed_config_names_the_file_and_line(trained, tmp_path: Path) -> None:
    run, _, cache = trained
    copy = _copy(run, tmp_path)
    config = copy / "config.json"
    text = config.read_text()
    config.write_text(text.replace('"method"', '"method" "', 1))
    r = _evaluate(copy, cache)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "config.json:2" in r.output and "malformed JSON" in r.output
    config.write_text(json.dumps({"method": "infonce"}))
    r = _evaluate(copy, cache)  # the checksum catches it first
    assert r.exit_code == 2 and "config.json" in r.output
    (copy / CHECKSUMS).unlink()
    with pytest.raises(BadInputError, match="not a run config"):
        load_method(copy)


def test_a_run_trained_again_drops_its_old_manifest(trained, tmp_path: Path) -> None:
    from xmodal.training.run import RunConfig, RunWriter

    run, _, _ = trained
    copy = _copy(run, tmp_path)
    config = RunConfig(**json.loads((copy / "config.json").read_text()))
    RunWriter(copy, config)  # a new run starts in the folder
    assert not (copy / CHECKSUMS).exists()

"""``--on-bad skip`` skips every kind of bad record, counts it by reason and reports the first
few file:line; ``--on-bad error`` names the file and line for each kind."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import openmoji_slice
from hostile_images import png_header
from PIL import Image
from typer.testing import CliRunner

from xmodal.cli import app
from xmodal.datasets import load_dataset, summarize_skipped

runner = CliRunner()

#: line (1-based, after the good ones) -> (JSONL text or bytes, the reason it is skipped)
GOOD = 12


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), np.uint8)
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 good emoji records followed by one bad record of each kind."""
    root = openmoji_slice(tmp_path_factory.mktemp("messy") / "data", step=200, count=GOOD)
    lines = (root / "data.jsonl").read_bytes().splitlines()
    (root / "images" / "cut.jpg").write_bytes(_jpeg(0)[:1500])
    (root / "images" / "noise.png").write_bytes(b"not an image at all")
    (root / "images" / "thin.png").write_bytes(png_header(20_000, 1))
    shutil.copy(
        root / "images" / Path(json.loads(lines[0])["image"]).name, root / "images" / "blank.png"
    )
    first = json.loads(lines[0])["image"]
    bad = [
        json.dumps({"image": "images/cut.jpg", "captions": ["a truncated jpeg"]}).encode(),
        json.dumps({"image": "images/gone.png", "captions": ["missing"]}).encode(),
        json.dumps({"image": "images/noise.png", "captions": ["noise"]}).encode(),
        json.dumps({"image": "images/thin.png", "captions": ["thin"]}).encode(),
        b'{"image": "images/x.png", "captions": [',
        json.dumps({"image": first, "captions": ["again"]}).encode(),
        json.dumps({"image": "../outside.png", "captions": ["escape"]}).encode(),
        b'{"image": "images/\xff.png"}',
        json.dumps({"image": "images/blank.png", "captions": [" "]}).encode(),
    ]
    (root / "data.jsonl").write_bytes(b"\n".join(lines + bad) + b"\n")
    return root


def test_every_kind_is_skipped_and_counted(messy: Path) -> None:
    ds = load_dataset(messy, on_bad="skip")
    assert len(ds) == GOOD
    summary = summarize_skipped(ds.skipped)
    assert summary["count"] == 10  # 9 records, and the blank caption before its record
    assert summary["by_reason"] == {
        "unreadable image": 2, "bad caption": 1, "duplicate id": 1, "image over a limit": 1,
        "malformed entry": 1, "missing image": 1, "no caption left": 1, "not UTF-8": 1,
        "path outside the data folder": 1,
    }  # fmt: skip
    assert summary["first"][0].startswith(f"{messy / 'data.jsonl'}:{GOOD + 1}: ")


@pytest.mark.parametrize("line", range(GOOD + 1, GOOD + 10))
def test_on_bad_error_names_file_and_line_for_every_kind(messy: Path, line: int, tmp_path) -> None:
    one = tmp_path / "one"
    shutil.copytree(messy, one)
    rows = (messy / "data.jsonl").read_bytes().splitlines()
    (one / "data.jsonl").write_bytes(b"\n".join([*rows[:GOOD], rows[line - 1]]) + b"\n")
    r = runner.invoke(app, ["encode", "--data", str(one), "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 2, r.output
    assert f"data.jsonl:{GOOD + 1}:" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_cli_train_and_encode_report_and_store_the_skips(messy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    r = runner.invoke(app, ["encode", "--data", str(messy), "--on-bad", "skip", "--text-encoder",
                            "minilm", "--cache-dir", str(cache), "--device", "cpu"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "skipped 10 bad input(s)" in r.output and f"data.jsonl:{GOOD + 1}" in r.output
    assert "and 5 more" in r.output
    run = tmp_path / "run"
    r = runner.invoke(app, [
        "train", "--data", str(messy), "--out", str(run), "--on-bad", "skip", "--epochs", "1",
        "--batch-size", "4", "--split", "sorted:8,2,2", "--cache-dir", str(cache),
        "--device", "cpu", "--option", "embed_dim=8",
    ])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "skipped 10 bad input(s)" in r.output
    stored = json.loads((run / "config.json").read_text())["skipped"]
    assert stored["count"] == 10 and stored["by_reason"]["unreadable image"] == 2


def test_index_build_reports_and_stores_the_skips(messy: Path, tmp_path: Path) -> None:
    from serve_toys import build_toy_index  # an index of the toy dual encoder, for its weights

    from xmodal.index import Snapshot

    weights = build_toy_index(tmp_path / "toy").parent / "toy.npy"
    out = tmp_path / "ix"
    r = runner.invoke(app, [
        "index", "build", "--data", str(messy), "--out", str(out), "--encoder", "toyclip:tiny",
        "--weights", str(weights), "--bits", "8", "--codes", "random", "--on-bad", "skip",
        "--cache-dir", str(tmp_path / "cache"),
    ])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "skipped 10 bad input(s)" in r.output and f"data.jsonl:{GOOD + 1}" in r.output
    snap = Snapshot.open(out)
    stored = json.loads((snap.folder / "skipped.json").read_text())
    assert stored["count"] == 10 and "skipped.json" in snap.manifest.files
    assert len(snap.collections["image"]) == GOOD
    snap.close()

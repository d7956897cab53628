"""Zero-shot indexes: a dual encoder used as it is over a plain folder of photos without captions.

``open_clip:<arch>`` is an optional extra; the same code path is exercised with a tiny dual
encoder of ``conftest.py``, ``toyclip:<name>`` (colour names <-> mean colours), and with a tiny random open_clip model
when the extra is installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import COLOURS as ALL_COLOURS
from conftest import TINY_CLIP
from PIL import Image
from typer.testing import CliRunner

from xmodal.cli import app
from xmodal.encoders.base import file_digest
from xmodal.index import IndexFormatError, Snapshot, add_to_index, build_index
from xmodal.search import Searcher

runner = CliRunner()
COLOURS = dict(list(ALL_COLOURS.items())[:4])


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    """A folder of coloured squares, in sub-folders, without any captions file."""
    folder = tmp_path / "photos"
    for i, (name, rgb) in enumerate(COLOURS.items()):
        (folder / f"set{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 16), rgb).save(folder / f"set{i % 2}" / f"{name}.png")
    return folder


@pytest.fixture()
def weights(toy_weights: Path) -> Path:
    return toy_weights


def test_photo_folder_without_captions(photos: Path, weights: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="random rotation: ITQ impossible, bits"):
        manifest = build_index(
            None, photos, tmp_path / "ix", encoder="toyclip:tiny", weights=weights, bits=8,
            cache_dir=tmp_path / "cache", progress=False,
        )  # fmt: skip
    assert manifest.model["kind"] == "dual" and manifest.model["weights_digest"] == file_digest(
        weights
    )
    assert manifest.collections["image"].count == 4 and manifest.collections["text"].count == 0
    assert manifest.codes["source"] == "random"  # 8 bits > 6 dimensions: no ITQ
    searcher = Searcher(tmp_path / "ix")
    for name in COLOURS:
        top = searcher.text_to_image(f"a {name} square", k=1)[0]
        assert top.id == f"set{list(COLOURS).index(name) % 2}/{name}.png"
        assert top.captions == () and top.image == str(photos.resolve() / top.id)
        assert (
            searcher.text_to_image(f"{name}", k=1, mode="two-stage", candidates=4)[0].id == top.id
        )
    assert (
        searcher.image_to_image(Image.new("RGB", (5, 5), (235, 15, 25)), k=1)[0].id
        == "set0/red.png"
    )
    assert searcher.text_to_text("red", k=3) == []  # no captions indexed
    # more photos, encoded with the same dual encoder
    more = tmp_path / "more"
    more.mkdir()
    Image.new("RGB", (8, 8), (130, 20, 200)).save(more / "purple.png")
    add_to_index(tmp_path / "ix", more, cache_dir=tmp_path / "cache", progress=False)
    assert Searcher(tmp_path / "ix").image_to_image(more / "purple.png", k=1)[0].id == "purple.png"


def test_changed_weights_are_refused(photos: Path, weights: Path, tmp_path: Path) -> None:
    build_index(
        None, photos, tmp_path / "ix", encoder="toyclip:tiny", weights=weights, bits=8,
        codes="random", cache_dir=tmp_path / "c", progress=False,
    )  # fmt: skip
    np.save(weights, np.random.default_rng(1).standard_normal((3, 6)))
    searcher = Searcher(tmp_path / "ix")
    with pytest.raises(IndexFormatError, match="weights file differs"):
        searcher.text_to_image("red")
    # vectors still work: nothing needs the encoder
    assert len(searcher.search("image", vectors=np.ones(6, np.float32), k=2).ids[0]) == 2


def test_cli_zero_shot(photos: Path, weights: Path, tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    args = [
        "index",
        "build",
        "--encoder",
        "toyclip:tiny",
        "--weights",
        str(weights),
        "--data",
        str(photos),
        "--out",
        str(ix),
        "--bits",
        "16",
        "--codes",
        "random",
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["search", str(ix), "blue", "--k", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["id"] == "set0/blue.png"
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "already holds an index" in result.output
    assert Snapshot.open(ix).version == 1
    result = runner.invoke(
        app, ["index", "build", "--data", str(photos), "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "either a run directory or a dual encoder" in result.output


def test_open_clip_zero_shot(photos: Path, tiny_clip_weights: Path, tmp_path: Path) -> None:
    arch, weights = TINY_CLIP, tiny_clip_weights
    ix = tmp_path / "ix"
    result = runner.invoke(
        app,
        [
            "index",
            "build",
            "--encoder",
            f"open_clip:{arch}",
            "--weights",
            str(weights),
            "--data",
            str(photos),
            "--out",
            str(ix),
            "--bits",
            "16",
            "--device",
            "cpu",
            "--cache-dir",
            str(tmp_path / "c"),
        ],
    )
    assert result.exit_code == 0, result.output
    searcher = Searcher(ix, device="cpu")
    # random weights: only the plumbing is checked; an indexed photo finds itself
    top = searcher.image_to_image(photos / "set0" / "red.png", k=1)[0]
    assert top.id == "set0/red.png" and top.score == pytest.approx(1.0, abs=1e-4)
    assert len(searcher.text_to_image("a red square", k=2)) == 2

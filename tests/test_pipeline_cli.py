"""End to end through the CLI on a slice of the shipped OpenMoji set: train, evaluate, search."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xmodal.cli import app
from xmodal.demo import demo_data_path, write_contact_sheet
from xmodal.pipeline import evaluate, search_text, train

runner = CliRunner()


@pytest.fixture(scope="module")
def emoji_slice(openmoji: Callable[..., Path]) -> Path:
    """124 emoji (every 20th) with their captions and labels, as a JSONL folder."""
    return openmoji(20)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
def test_cli_train_evaluate_search(emoji_slice: Path, cache: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        ["train", "--data", str(emoji_slice), "--out", str(run), "--epochs", "3",
         "--batch-size", "32", "--split", "random:0.6,0.2,0.2", "--cache-dir", str(cache),
         "--option", "embed_dim=64", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("config.json", "split.json", "history.jsonl", "model.pt", "metrics.json"):
        assert (run / name).is_file(), name
    split = json.loads((run / "split.json").read_text())
    assert [len(split[k]) for k in ("train", "val", "test")] == [76, 24, 24]

    result = runner.invoke(app, ["evaluate", str(run), "--json", "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert set(metrics) >= {"i2t_r1", "t2i_r10", "rsum", "map_i2t", "map_t2i", "map_i2i", "map_t2t"}
    # 24 test emoji: chance R@10 is about 40%; trained on real features it must do much better
    assert metrics["t2i_r10"] > 60
    assert metrics["rsum"] == pytest.approx(sum(metrics[k] for k in metrics if "_r" in k))
    assert json.loads((run / "metrics.json").read_text())["test"] == metrics

    result = runner.invoke(
        app, ["search", str(run), "face", "--k", "3", "--json", "--cache-dir", str(cache)]
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]


def test_cli_reports_bad_input_clearly(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert "nope" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == 2 and "not an xmodal run" in result.output
    result = runner.invoke(app, ["train", "--data", "x", "--out", "y", "--option", "novalue"])
    assert result.exit_code != 0 and "KEY=VALUE" in result.output


@pytest.mark.slow
def test_tfidf_run_reuses_its_fitted_vocabulary(
    emoji_slice: Path, cache: Path, tmp_path: Path
) -> None:
    run = tmp_path / "tfidf"
    train(
        emoji_slice, run, "cca", text_encoder="tfidf", split="random:0.6,0.2,0.2",
        method_options={"embed_dim": 32}, train_options={"device": "cpu", "progress": False},
        cache_dir=cache,
    )  # fmt: skip
    assert (run / "text_encoder.state").is_file()
    metrics = evaluate(run, cache_dir=cache, progress=False)
    assert metrics["t2i_r10"] > 50
    hits = search_text(run, "smiling face", k=5, cache_dir=cache)
    # the query is encoded with the run's fitted vocabulary: the top hits are faces
    assert sum("face" in h.captions[0] for h in hits) >= 4


def test_contact_sheet_is_self_contained_html(tmp_path: Path) -> None:
    from xmodal.search import Result

    image = next((demo_data_path() / "images").iterdir())
    hits = [
        Result(1, "a", 0.9, "image", 0, str(image), None, ("grinning <face>",), ()),
        Result(2, "b", 0.5, "image", 1, None, None, (), ()),
    ]
    page = write_contact_sheet({"a query & more": hits}, tmp_path / "sheet.html").read_text()
    assert "data:image/png;base64," in page
    assert "grinning &lt;face&gt;" in page and "a query &amp; more" in page
    assert "CC BY-SA 4.0" in page


@pytest.mark.slow
def test_demo_shows_the_method_with_the_better_validation_map(
    emoji_slice: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo trains its methods, picks the one with the higher mean validation mAP (never
    test) and runs its searches with that run."""
    import io

    from rich.console import Console

    import xmodal.demo

    monkeypatch.setattr(xmodal.demo, "demo_data_path", lambda: emoji_slice)
    monkeypatch.setenv("XMODAL_CACHE", str(cache))
    out = tmp_path / "demo"
    shown = xmodal.demo.run_demo(out, epochs=2, device="cpu", console=Console(file=io.StringIO()))
    val = shown["val"]
    assert set(val) == set(xmodal.demo.DEMO_METHODS) == set(shown["metrics"])
    mean_map = {m: (v["map_i2t"] + v["map_t2i"]) / 2 for m, v in val.items()}
    assert shown["winner"] == max(mean_map, key=mean_map.__getitem__)
    assert val[shown["winner"]] != shown["metrics"][shown["winner"]]  # val, not test, decided
    from xmodal.pipeline import run_searcher

    with run_searcher(out / shown["winner"], emoji_slice) as searcher:
        expected = {q: searcher.text_to_image(q, k=6) for q in xmodal.demo.DEMO_QUERIES}
    assert shown["searches"] == expected


@pytest.mark.slow
def test_cli_train_from_a_preset_file_with_trainer_options(
    emoji_slice: Path, cache: Path, tmp_path: Path
) -> None:
    preset = tmp_path / "small-vse.json"
    preset.write_text(json.dumps({
        "description": "a small vse", "method": "vse",
        "method_options": {"embed_dim": 32, "margin": 0.3}, "train_options": {"patience": 1, "epochs": 9},
    }))  # fmt: skip
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        ["train", "--data", str(emoji_slice), "--out", str(run), "--preset", str(preset),
         "-o", "margin=0.25", "-t", "weight_decay=0", "-t", "grad_clip=none", "--epochs", "2",
         "--split", "random:0.6,0.2,0.2", "--cache-dir", str(cache), "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["method"] == "vse" and config["preset"] == str(preset)
    assert config["method_options"]["embed_dim"] == 32
    assert config["method_options"]["margin"] == 0.25  # -o beats the preset
    train = config["train"]
    assert (train["patience"], train["weight_decay"], train["grad_clip"]) == (1, 0.0, None)
    assert train["epochs"] == 2  # --epochs beats the preset
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2


def test_cli_aeir_needs_a_target_and_others_refuse_one(tmp_path: Path) -> None:
    base = ["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")]
    result = runner.invoke(app, [*base, "--method", "aeir"])
    assert result.exit_code == 2 and "--target DIR" in result.output
    result = runner.invoke(app, [*base, "--method", "ensemble(aeir(vse))"])
    assert result.exit_code == 2 and "unpaired target domain" in result.output
    result = runner.invoke(app, [*base, "--method", "vse", "--target", str(tmp_path)])
    assert result.exit_code == 2 and "does not use unpaired target data" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_cli_trains_aeir_with_an_unpaired_target_and_evaluates(
    emoji_slice: Path, cache: Path, tmp_path: Path
) -> None:
    # the target: other emoji than the source's, their pairing ignored
    src = demo_data_path()
    target = tmp_path / "target"
    (target / "images").mkdir(parents=True)
    lines = (src / "data.jsonl").read_text(encoding="utf-8").splitlines()[7::40]
    for line in lines:
        shutil.copy(src / json.loads(line)["image"], target / "images")
    (target / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = tmp_path / "aeir"
    result = runner.invoke(
        app,
        ["train", "--data", str(emoji_slice), "--target", str(target), "--out", str(run),
         "--method", "aeir", "--epochs", "2", "--batch-size", "16", "--split", "random:0.6,0.2,0.2",
         "--cache-dir", str(cache), "--device", "cpu", "-o", "embed_dim=32"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["method"] == "aeir" and config["target"] == str(target)
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert {"adv", "structure", "domain_accuracy", "base_loss"} <= set(history[0])
    assert all(0.0 <= h["domain_accuracy"] <= 1.0 for h in history)
    result = runner.invoke(app, ["evaluate", str(run), "--json", "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rsum"] > 0

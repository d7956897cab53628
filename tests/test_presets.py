"""Presets as data (JSON files found by name) and the one typed coercion of options."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Literal

import pytest
from typer.testing import CliRunner

from xmodal.cli import app
from xmodal.methods import build_method
from xmodal.options import build_config, coerce_value
from xmodal.training import TrainConfig
from xmodal.training.presets import (
    PRESET_DIR,
    Preset,
    get_preset,
    list_presets,
    load_preset_file,
    register_preset,
    resolve_preset,
)


def test_every_json_file_of_the_folder_is_a_valid_preset() -> None:
    files = sorted(p.stem for p in PRESET_DIR.glob("*.json"))
    assert "cusa-vse-tuned" in files
    assert list_presets() == files or set(files) <= set(list_presets())
    for name in files:
        preset = get_preset(name)
        assert preset.source == PRESET_DIR / f"{name}.json" and preset.description


def test_tuned_cusa_preset_builds_the_tuned_method() -> None:
    preset = get_preset("cusa-vse-tuned")
    model = build_method(preset.method, 12, 10, **preset.method_options)
    assert model.name == "cusa" and model.config.base == "vse"
    assert model.config.teacher_temperature == 0.1 and model.config.uni_head == "none"
    assert build_config(TrainConfig, preset.train_options).patience == 5


def test_a_user_file_is_a_preset_and_bad_files_name_themselves(tmp_path: Path) -> None:
    good = tmp_path / "mine.json"
    good.write_text(json.dumps({"method": "vse", "method_options": {"margin": "0.3"}}))
    assert get_preset(str(good)).name == "mine"
    assert get_preset(good).method_options == {"margin": "0.3"}
    for body, message in (
        ('{"method": "vse",}', "not valid JSON"),
        ('{"method": "vse", "epochs": 3}', "unknown preset key"),
        ('{"method_options": {}}', 'needs "method"'),
        ('{"method": "vse", "method_options": {"margn": 0.3}}', "did you mean 'margin'"),
        ('{"method": "vse", "train_options": {"patience": "soon"}}', "patience='soon'"),
        ('{"method": "nope"}', "unknown method"),
        ('{"method": "cca", "image_encoder": "efficientnet-lite9"}', "unknown image encoder"),
        ('{"method": "cca", "text_encoder": 3}', "must be an encoder name"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(body)
        with pytest.raises(ValueError, match=message) as info:
            load_preset_file(bad)
        assert "bad.json" in str(info.value)
    with pytest.raises(ValueError, match=r"unknown preset 'nope'; known: .*cusa-vse-tuned"):
        get_preset("nope")


def test_explicit_options_override_the_preset_key_by_key() -> None:
    run = resolve_preset("cusa-vse-tuned", None, {"csa_weight": 0.5}, {"patience": 2, "epochs": 3})
    assert run.method == "cusa(vse)" and run.name == "cusa-vse-tuned"
    assert run.method_options == {**get_preset("cusa-vse-tuned").method_options, "csa_weight": 0.5}
    assert run.train_options == {"patience": 2, "epochs": 3}
    plain = resolve_preset(None, None)
    assert (plain.method, plain.method_options, plain.train_options) == ("infonce", {}, {})
    assert (plain.image_encoder, plain.text_encoder) == (None, None)
    with pytest.raises(ValueError, match="trains 'cusa\\(vse\\)'"):
        resolve_preset("cusa-vse-tuned", "infonce")


def test_registering_a_taken_name_warns_and_replaces() -> None:
    first = Preset("test-twice", "infonce", {"temperature": 0.05})
    second = Preset("test-twice", "vse", {"margin": 0.1})
    register_preset(first)
    with pytest.warns(
        UserWarning, match="preset 'test-twice' was registered by Python.*replaces it"
    ):
        register_preset(second)
    assert get_preset("test-twice") == second
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_preset(second)  # the same preset again is not a replacement


def test_registering_a_taken_method_name_warns() -> None:
    from xmodal.methods.infonce import InfoNCE
    from xmodal.methods.registry import get_method_class, register_method

    class Other(InfoNCE):
        name = "infonce"

    with pytest.warns(UserWarning, match="method 'infonce' was registered by"):
        register_method(Other)
    assert get_method_class("infonce") is Other
    with pytest.warns(UserWarning):
        register_method(InfoNCE)
    assert get_method_class("infonce") is InfoNCE


@pytest.mark.parametrize(
    ("raw", "annotation", "expected"),
    [
        ("3", int, 3),
        ("0.5", float, 0.5),
        (2, float, 2.0),
        ("False", bool, False),
        ("yes", bool, True),
        ("none", float | None, None),
        ("5.0", float | None, 5.0),
        ("1024,512", tuple[int, ...], (1024, 512)),
        ("[256]", tuple[int, ...], (256,)),
        ("()", tuple[int, ...], ()),
        ([8, 4], tuple[int, ...], (8, 4)),
        ('{"temperature": 0.05}', dict, {"temperature": 0.05}),
        ("map", Literal["rsum", "map"], "map"),
    ],
)
def test_coerce_value_parses_strings_by_type(
    raw: object, annotation: object, expected: object
) -> None:
    assert coerce_value(raw, annotation) == expected


@pytest.mark.parametrize(
    ("raw", "annotation"),
    [("three", int), ("1.5", int), ("maybe", bool), (True, int), ("x,y", tuple[int, ...])],
)
def test_coerce_value_rejects_what_does_not_fit(raw: object, annotation: object) -> None:
    with pytest.raises(ValueError, match="expected"):
        coerce_value(raw, annotation, "opt")


def test_trainer_options_share_the_coercion_and_the_friendly_message() -> None:
    cfg = build_config(TrainConfig, {"patience": "3", "weight_decay": "0", "grad_clip": "none"})
    assert (cfg.patience, cfg.weight_decay, cfg.grad_clip) == (3, 0.0, None)
    with pytest.raises(
        ValueError,
        match="unknown trainer option 'weight_decy' for TrainConfig; "
        "did you mean 'weight_decay'\\? known: batch_size, device",
    ):
        build_config(TrainConfig, {"weight_decy": "0"}, "trainer option")
    with pytest.raises(ValueError, match="select_metric='auc': expected 'rsum' \\| 'map'"):
        build_config(TrainConfig, {"select_metric": "auc"})


runner = CliRunner()


def test_cli_lists_presets_and_rejects_bad_options_before_any_work(tmp_path: Path) -> None:
    result = runner.invoke(app, ["list", "presets"])
    assert result.exit_code == 0 and "cusa-vse-tuned (cusa(vse))" in result.output
    assert "methods:" not in result.output
    result = runner.invoke(app, ["list"])
    assert "methods:" in result.output and "presets:" in result.output
    assert "float index kinds:" in result.output
    assert "A+B: the parts' unit-length features side by side" in result.output
    result = runner.invoke(app, ["list", "things"])
    assert result.exit_code == 2 and "methods, encoders, kinds, presets or all" in result.output
    base = ["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")]
    result = runner.invoke(app, [*base, "-t", "patiense=3"])
    assert result.exit_code == 2 and "did you mean 'patience'" in result.output
    result = runner.invoke(app, [*base, "--preset", "cusa-vse-tuned", "-o", "csa_weigth=1"])
    assert result.exit_code == 2 and "did you mean 'csa_weight'" in result.output
    result = runner.invoke(app, [*base, "--preset", "nope"])
    assert result.exit_code == 2 and "unknown preset 'nope'" in result.output
    result = runner.invoke(app, [*base, "--preset", "cusa-vse-tuned", "--method", "vse"])
    assert result.exit_code == 2 and "leave the method out" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("preset", "image_encoder", "options", "image_dim"),
    [
        ("cca-flickr8k", "efficientnet-lite0", {"ridge": 1.0, "power": 0.5}, 1280),
        (
            "cca-flickr8k-concat",
            "efficientnet-lite0+efficientnet-lite1+efficientnet-lite2",
            {"ridge": 2.0, "power": 0.375},
            3840,
        ),
    ],
)
def test_cca_flickr8k_presets_fit_cca_with_their_options_and_encoders(
    openmoji, tmp_path, preset, image_encoder, options, image_dim
) -> None:
    """Each preset chosen on Flickr8K val trains on a small real slice with its own options and
    image encoder, and its embeddings are those of ``cca`` built with them directly."""
    import json

    from xmodal.pipeline import train

    data = openmoji(step=40)
    quiet = {"device": "cpu", "progress": False}
    a = train(data, tmp_path / "preset", preset=preset, train_options=quiet)
    b = train(data, tmp_path / "direct", "cca", image_encoder=image_encoder,
              method_options=options, train_options=quiet)  # fmt: skip
    config = json.loads((tmp_path / "preset" / "config.json").read_text())
    assert config["method"] == "cca" and config["preset"] == preset
    assert config["image_encoder"] == image_encoder and config["image_dim"] == image_dim
    assert {k: config["method_options"][k] for k in options} == options
    assert a["val"] == b["val"] and a["val"]["rsum"] > 0


def test_infonce_flickr8k_preset_trains_infonce_with_its_dropout_and_batch(
    openmoji, tmp_path
) -> None:
    """The regularised infonce preset trains on a small real slice with dropout 0.5 and batches
    of 512, exactly as infonce given those options directly does (same seed)."""
    from xmodal.pipeline import train

    data = openmoji(step=40)
    quiet = {"device": "cpu", "progress": False, "epochs": 2}
    a = train(data, tmp_path / "preset", preset="infonce-flickr8k", train_options=quiet)
    b = train(data, tmp_path / "direct", "infonce", method_options={"dropout": 0.5},
              train_options={**quiet, "batch_size": 512})  # fmt: skip
    config = json.loads((tmp_path / "preset" / "config.json").read_text())
    assert config["method"] == "infonce" and config["preset"] == "infonce-flickr8k"
    assert config["method_options"]["dropout"] == 0.5 and config["train"]["batch_size"] == 512
    assert a["val"] == b["val"] and a["val"]["rsum"] > 0

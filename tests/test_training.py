"""The one trainer: learning, selection on validation, stages, run directories."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from xmodal.embedding import embed_pairs, score_embeddings
from xmodal.methods import Batch, Stage, build_method
from xmodal.methods.infonce import InfoNCE
from xmodal.training import PairedFeatures, TrainConfig, Trainer
from xmodal.training.run import RunConfig, RunWriter, load_method


def synthetic_split(n_images: int, seed: int, per_image: int = 3) -> PairedFeatures:
    """Images in 16-d; captions are a fixed noisy linear map of their image (learnable)."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(123).normal(size=(16, 12))
    image = rng.normal(size=(n_images, 16)).astype(np.float32)
    t2i = np.repeat(np.arange(n_images), per_image)
    text = (image[t2i] @ mix + 0.5 * rng.normal(size=(len(t2i), 12))).astype(np.float32)
    return PairedFeatures(image, text, t2i)


FAST = dict(epochs=8, batch_size=32, lr=3e-3, progress=False, device="cpu")


def test_training_beats_the_untrained_model_on_held_out_data() -> None:
    train, val, test = synthetic_split(200, 0), synthetic_split(50, 1), synthetic_split(50, 2)
    torch.manual_seed(0)
    method = build_method("infonce", 16, 12, embed_dim=16, hidden=[32])
    before = score_embeddings(embed_pairs(method, test))["rsum"]
    result = Trainer(method, TrainConfig(**FAST)).fit(train, val)
    after = score_embeddings(embed_pairs(method, test))["rsum"]
    assert after > before + 100
    assert result.seconds_per_epoch > 0


def test_checkpoint_is_the_best_validation_epoch() -> None:
    train, val = synthetic_split(200, 0), synthetic_split(50, 1)
    method = build_method("vse", 16, 12, embed_dim=16, hidden=[])
    result = Trainer(method, TrainConfig(**FAST, patience=0)).fit(train, val)
    val_rsums = [h["val_rsum"] for h in result.history]
    best = int(np.argmax(val_rsums))
    assert result.best_epoch == result.history[best]["epoch"]
    assert result.best["rsum"] == pytest.approx(max(val_rsums))
    # the method now holds the selected state, not the last one
    assert score_embeddings(embed_pairs(method, val))["rsum"] == pytest.approx(max(val_rsums))


def test_early_stopping_honours_patience() -> None:
    train, val = synthetic_split(100, 0), synthetic_split(30, 1)
    method = build_method("infonce", 16, 12, embed_dim=8, hidden=[])
    result = Trainer(method, TrainConfig(**{**FAST, "epochs": 40}, patience=2)).fit(train, val)
    last = result.history[-1]["epoch"]
    assert last < 40 and last - result.best_epoch == 2


class TwoStage(InfoNCE):
    """An auxiliary pre-training stage without selection, then the main stage."""

    name = "two-stage-test"

    def stages(self) -> list[Stage]:
        return [
            Stage("pretrain", list(self.image_head.parameters()), 0.5, select=False),
            Stage("main", list(self.parameters()), 0.5),
        ]

    def loss(self, batch: Batch, stage: str = "main") -> dict[str, torch.Tensor]:
        if stage == "pretrain":
            return {"loss": self.embed_image(batch.image).pow(2).sum(1).sub(1).abs().mean() + 0.0}
        return super().loss(batch)


def test_stages_run_in_order_and_only_selecting_stages_are_validated() -> None:
    train, val = synthetic_split(100, 0), synthetic_split(30, 1)
    method = TwoStage(TwoStage.Config(embed_dim=8, hidden=()), 16, 12)
    result = Trainer(method, TrainConfig(**FAST, patience=0)).fit(train, val)
    stages = [h["stage"] for h in result.history]
    assert stages == ["pretrain"] * 4 + ["main"] * 4
    assert all("val_rsum" not in h for h in result.history if h["stage"] == "pretrain")
    assert all("val_rsum" in h for h in result.history if h["stage"] == "main")


def test_non_finite_loss_is_an_error_naming_the_epoch() -> None:
    train = synthetic_split(50, 0)
    train.text[0, 0] = np.nan
    method = build_method("infonce", 16, 12, embed_dim=8, hidden=[])
    with pytest.raises(FloatingPointError, match="epoch 1"):
        Trainer(method, TrainConfig(**FAST)).fit(train)


def test_closed_form_method_is_fitted_without_a_loop() -> None:
    train, val = synthetic_split(300, 0), synthetic_split(50, 1)
    method = build_method("cca", 16, 12, embed_dim=12, power=1.0)
    result = Trainer(method, TrainConfig(**FAST)).fit(train, val)
    assert result.history == [{"stage": "fit", "epoch": 0, **result.best}]
    assert result.best["rsum"] > 400  # a linear relation: CCA recovers it


def test_run_directory_round_trip(tmp_path: Path) -> None:
    train, val = synthetic_split(100, 0), synthetic_split(30, 1)
    method = build_method("infonce", 16, 12, embed_dim=8, hidden=[16], temperature=0.1)
    cfg = TrainConfig(**FAST)
    run = RunConfig(
        method="infonce",
        method_options={"embed_dim": 8, "hidden": [16], "temperature": 0.1},
        train=asdict(cfg),
        image_encoder="precomputed",
        text_encoder="precomputed",
        data="synthetic",
        image_dim=16,
        text_dim=12,
    )
    writer = RunWriter(tmp_path / "run", run)
    result = Trainer(method, cfg, on_epoch=writer.on_epoch).fit(train, val)
    writer.finish(method, {"val": result.best})
    history = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert len(history) == len(result.history)
    assert (tmp_path / "run" / "training.png").stat().st_size > 1000
    loaded, config = load_method(tmp_path / "run")
    assert config.method == "infonce" and config.train_config().batch_size == 32
    np.testing.assert_allclose(
        embed_pairs(loaded, val).image, embed_pairs(method, val).image, atol=1e-6
    )
    with pytest.raises(FileNotFoundError, match="not an xmodal run"):
        load_method(tmp_path)

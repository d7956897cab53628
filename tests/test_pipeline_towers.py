"""Runs pick the encoder a fine-tuned tower reads when none is named."""

from __future__ import annotations

import pytest

from xmodal import pipeline
from xmodal.pipeline import encoder_for_tower


def test_mlp_towers_use_the_defaults_or_the_named_encoder() -> None:
    assert encoder_for_tower(None, "mlp", "efficientnet-lite0", "image") == "efficientnet-lite0"
    assert encoder_for_tower("tfidf", "mlp", "minilm", "text") == "tfidf"


def test_fine_tuned_towers_pick_their_intermediate_features() -> None:
    assert encoder_for_tower(None, "minilm-top2", "minilm", "text") == "minilm.tokens-l4"
    assert (
        encoder_for_tower(None, "efficientnet-top1", "efficientnet-lite0", "image")
        == "efficientnet-lite0.blocks-15"
    )
    assert encoder_for_tower("minilm.tokens-l4", "minilm-top2", "minilm", "text") == (
        "minilm.tokens-l4"
    )


def test_a_named_encoder_that_does_not_fit_the_tower_is_refused_before_any_work(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"text_tower='minilm-top2' reads 'minilm.tokens-l4'"):
        pipeline.train(
            tmp_path / "does-not-exist",
            tmp_path / "run",
            "infonce",
            text_encoder="minilm",
            method_options={"text_tower": "minilm-top2"},
        )
    assert not (tmp_path / "run").exists()

"""Flickr8k-1k (real photos, five captions each): Recall@K through an index equals ``xmodal evaluate``.

The images stay where they are (``../shared/data/flickr8k-1k``): the slice links to them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xmodal.index import build_index
from xmodal.pipeline import evaluate, train
from xmodal.search import Searcher, index_metrics

pytestmark = pytest.mark.slow
FLICKR = Path(__file__).parents[1].parent / "shared" / "data" / "flickr8k-1k"


@pytest.fixture(scope="module")
def flickr_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (FLICKR / "data.jsonl").is_file():
        pytest.skip(f"flickr8k-1k not found at {FLICKR} (shared real data)")
    out = tmp_path_factory.mktemp("flickr")
    (out / "images").mkdir()
    lines = (FLICKR / "data.jsonl").read_text(encoding="utf-8").splitlines()[:30]
    import json

    for line in lines:
        name = json.loads(line)["image"]
        (out / name).symlink_to(FLICKR / name)  # linked, never copied
    (out / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def test_flickr_metrics_through_the_index(flickr_slice: Path, tmp_path: Path) -> None:
    from threadpoolctl import threadpool_limits

    cache = tmp_path / "cache"
    with threadpool_limits(1, user_api="blas"):
        train(
            flickr_slice, tmp_path / "run", "infonce", split="random:0.6,0.2,0.2",
            method_options={"embed_dim": 32}, cache_dir=cache,
            train_options={"device": "cpu", "progress": False, "epochs": 3},
        )  # fmt: skip
        reference = evaluate(tmp_path / "run", split="all", cache_dir=cache, progress=False)
        manifest = build_index(
            tmp_path / "run", flickr_slice, tmp_path / "ix", bits=32, cache_dir=cache, device="cpu",
            progress=False,
        )  # fmt: skip
        assert (
            manifest.collections["image"].count == 30 and manifest.collections["text"].count == 150
        )
        searcher = Searcher(tmp_path / "ix", device="cpu")
        got = index_metrics(searcher, "float")
    assert set(got) == set(reference)  # no labels: recall only
    for key, value in reference.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    # 30 photos, 150 captions: a trained run does far better than chance (R@10 = 33%)
    assert got["t2i_r10"] > 50

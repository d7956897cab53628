"""The scale-out commands end to end on 40 shipped OpenMoji emoji (EfficientNet-Lite0 + TF-IDF).

* ``torchrun --nproc-per-node 2 -m xmodal.cli train --ddp`` (gloo, CPU, 127.0.0.1): rank 0
  writes one loadable run directory, the other rank writes nothing.
* ``xmodal index build RUN --ray --shards 2`` on a local 2-CPU Ray cluster: the sharded float
  indexes answer text->image and image->text queries exactly as the single index does.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xmodal.cli import app
from xmodal.demo import demo_data_path

DEMO = demo_data_path()
SPLIT = "random:0.6,0.2,0.2"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DEMO / "data.jsonl").is_file(), reason=f"{DEMO} is not present"),
]


@pytest.fixture(scope="module")
def emoji40(openmoji: Callable[..., Path]) -> Path:
    """40 emoji (every 60th record) with captions and labels, as a JSONL folder."""
    return openmoji(60, count=40)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_train_ddp_under_torchrun(emoji40: Path, cache: Path, tmp_path: Path) -> None:
    from xmodal.pipeline import LoadedRun

    run, tmpdir = tmp_path / "run", tmp_path / "tmp"
    tmpdir.mkdir()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(tmpdir),  # torchrun's own logs land here; the ranks must add nothing
        "MPLCONFIGDIR": str(tmpdir / "matplotlib"),
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
        "-m", "xmodal.cli", "train", "--data", str(emoji40), "--out", str(run), "--method", "vse",
        "--text-encoder", "tfidf", "--epochs", "1", "--batch-size", "4", "--split", SPLIT,
        "--option", "embed_dim=16", "--device", "cpu", "--cache-dir", str(cache), "--ddp",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # one run directory, written by rank 0 alone (a second writer would add an epoch line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tmp"]
    assert sorted(p.name for p in run.iterdir()) == [
        "checksums.json", "config.json", "history.jsonl", "metrics.json", "model.pt", "split.json",
        "text_encoder.state", "training.png",
    ]  # fmt: skip
    history = (run / "history.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(h)["epoch"] for h in history] == [1]
    leftovers = [p.name for p in tmpdir.iterdir()]
    assert not [n for n in leftovers if "xmodal" in n], leftovers

    loaded = LoadedRun.open(run, device="cpu")
    assert loaded.method.name == "vse" and loaded.config.train["batch_size"] == 4
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    assert [len(split[k]) for k in ("train", "val", "test")] == [24, 8, 8]
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["best_epoch"] == 1 and metrics["val"]["rsum"] >= 0


def test_cli_index_build_ray_shards_search_like_one_index(
    emoji40: Path, cache: Path, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'xmodal[scale]')")
    from xmodal.distributed import ShardedSearcher
    from xmodal.pipeline import train
    from xmodal.search import Searcher

    run, index = tmp_path / "run", tmp_path / "index"
    train(
        emoji40, run, "cca", text_encoder="tfidf", split=SPLIT, method_options={"embed_dim": 16},
        train_options={"device": "cpu", "progress": False}, cache_dir=cache,
    )  # fmt: skip
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray.is_initialized()
    if started:  # the CLI joins this 2-CPU cluster instead of starting one on every core
        ray.init(
            num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
            log_to_driver=False, configure_logging=False,
        )  # fmt: skip
    try:
        result = CliRunner().invoke(
            app,
            ["index", "build", str(run), "--data", str(emoji40), "--out", str(index), "--ray",
             "--shards", "2", "--device", "cpu", "--cache-dir", str(cache)],
        )  # fmt: skip
    finally:
        if started:
            ray.shutdown()
    assert result.exit_code == 0, result.output
    for name, rows in (("image", 40), ("text", None)):
        info = json.loads((index / "shards" / name / "sharded.json").read_text(encoding="utf-8"))
        assert len(info["bounds"]) == 2
        assert rows is None or info["bounds"][-1][1] == rows

    single, sharded = Searcher(index), ShardedSearcher(index)
    try:
        assert sharded.sharded == ["image", "text"]
        texts = ["smiling face", "red heart", "cat"]
        images = sorted((emoji40 / "images").iterdir())[:3]
        for ask, queries, k in (("text_to_image", texts, 10), ("image_to_text", images, 15)):
            got = getattr(sharded, ask)(queries, k=k)
            # all rows (k above the row count), equal scores by position: the exact reference
            full = getattr(single, ask)(queries, k=1000)
            same_k = getattr(single, ask)(queries, k=k)
            for got_q, full_q, same_q in zip(got, full, same_k, strict=True):
                assert [r.row for r in got_q] == [r.row for r in full_q[:k]]
                assert [r.id for r in got_q] == [r.id for r in full_q[:k]]
                scores = [r.score for r in got_q]
                assert scores == pytest.approx([r.score for r in full_q[:k]], abs=1e-6)
                assert scores == pytest.approx([r.score for r in same_q], abs=1e-6)
                # Searcher's own top k agrees above the k-th score; which rows of a group of
                # equal scores straddling the k-th place FAISS keeps is its own choice
                above = [r.row for r in same_q if r.score > same_q[-1].score]
                assert [r.row for r in got_q[: len(above)]] == above
    finally:
        single.close()
        sharded.close()

"""Sharded float indexes rank exactly like one index (the single Searcher's engine).

Flat shards against :func:`xmodal.search.engine.search_collection` over one flat index
(including ties between duplicate rows in different shards, ordered by global position); IVF
shards and their merge against one IVF-PQ index on the same trained quantizer. One test builds
the shards as Ray tasks on a local 127.0.0.1 cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np
import pytest

from xmodal.distributed import ShardedIndex, build_sharded, merge_ivf, merge_topk, shard_bounds
from xmodal.index.kinds import get_kind
from xmodal.index.manifest import CollectionInfo
from xmodal.index.snapshot import Collection
from xmodal.search.engine import search_collection


def _unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _single_flat(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    codes = np.zeros((len(x), 8), dtype=np.uint8)
    col = Collection(
        "image", CollectionInfo(len(x), "flat", "flat"), np.arange(len(x)), index,
        faiss.IndexBinaryFlat(64), x, codes,
    )  # fmt: skip
    pos, scores, _ = search_collection(col, "float", k, vectors=q)
    return scores, pos


def test_shard_bounds_and_merge_topk() -> None:
    assert shard_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert shard_bounds(2, 5) == [(0, 1), (1, 2)]
    s, p = merge_topk(
        [np.array([[0.9, 0.5]]), np.array([[0.9, 0.7]]), np.array([[0.1, -np.inf]])],
        [np.array([[7, 3]]), np.array([[2, 9]]), np.array([[5, -1]])],
        k=6,
    )
    assert p.tolist() == [[2, 7, 9, 3, 5, -1]]
    assert s[0, :5].tolist() == pytest.approx([0.9, 0.9, 0.7, 0.5, 0.1]) and s[0, 5] == -np.inf


def test_flat_shards_equal_single_index_with_ties(tmp_path: Path) -> None:
    x = _unit_rows(1000, 16, 0)
    x[900] = x[10]  # duplicates in other shards: equal scores, ordered by position
    x[500] = x[10]
    q = np.concatenate([x[[10, 42]], _unit_rows(30, 16, 1)])
    build_sharded(x, tmp_path / "s", shards=4, kind="flat", workers=2)
    scores, pos = ShardedIndex.open(tmp_path / "s").search(q, k=20)
    ref_scores, ref_pos = _single_flat(x, q, 20)
    assert pos[0, :3].tolist() == [10, 500, 900]
    np.testing.assert_array_equal(pos, ref_pos)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6, atol=1e-6)
    # k above the row count: every row once, padding never shows
    small = build_sharded(x[:5], tmp_path / "t", shards=3)
    assert [tuple(b) for b in small["bounds"]] == [(0, 1), (1, 3), (3, 5)]
    _s, p = ShardedIndex.open(tmp_path / "t").search(q[:2], k=9)
    assert p.shape == (2, 5) and sorted(p[1].tolist()) == [0, 1, 2, 3, 4]


def test_ivf_shards_and_merge_equal_one_ivf_index(tmp_path: Path) -> None:
    x = _unit_rows(4000, 32, 2)
    q = _unit_rows(25, 32, 3)
    ivf = get_kind("float", "ivf")
    params = ivf.default_params(len(x), 32)
    single = ivf.new_index(32, params, x)
    ivf.add(single, x)
    ref_scores, ref_pos = single.search(q, 10)
    build_sharded(x, tmp_path / "ivf", shards=3, kind="ivf", workers=2)
    scores, pos = ShardedIndex.open(tmp_path / "ivf").search(q, 10)
    np.testing.assert_array_equal(pos, ref_pos)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    merge_ivf(tmp_path / "ivf")
    merged = ShardedIndex.open(tmp_path / "ivf", merged=True)
    assert len(merged.indexes) == 1 and merged.indexes[0].ntotal == len(x)
    _m_scores, m_pos = merged.search(q, 10)
    np.testing.assert_array_equal(m_pos, ref_pos)
    with pytest.raises(ValueError, match="only shards of a kind that merges"):
        build_sharded(x[:100], tmp_path / "flat", shards=2)
        merge_ivf(tmp_path / "flat")


@pytest.mark.slow
def test_shards_built_by_ray_tasks(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'xmodal[scale]')")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    x = _unit_rows(600, 16, 4)
    q = _unit_rows(10, 16, 5)
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
            log_to_driver=False, configure_logging=False,
        )  # fmt: skip
    try:
        build_sharded(x, tmp_path / "r", shards=3, kind="flat", ray=True)
    finally:
        if started:
            ray.shutdown()
    _scores, pos = ShardedIndex.open(tmp_path / "r").search(q, 15)
    _ref_scores, ref_pos = _single_flat(x, q, 15)
    np.testing.assert_array_equal(pos, ref_pos)

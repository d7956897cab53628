"""FAISS index kinds: the auto rule, building, growing, shrinking, memory-mapping each kind."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from xmodal.datasets.record import Record
from xmodal.evaluation import hamming_distance, pack_codes
from xmodal.index import (
    EncodedItems,
    IndexFormatError,
    Snapshot,
    append_items,
    create_index,
    delete_items,
)
from xmodal.index.kinds import (
    AUTO_BINARY_IVF_FROM,
    AUTO_FLAT_BELOW,
    AUTO_FLOAT_IVF_FROM,
    IVF_MIN_ROWS,
    IndexKind,
    IVFKind,
    choose_kind,
    get_kind,
    kind_names,
    register_kind,
    unregister_kind,
)
from xmodal.search import Searcher

DIM, BITS = 16, 32


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """BLAS / OpenMP threads crawl when they fight over an oversubscribed machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def clustered(n: int, seed: int = 0) -> EncodedItems:
    """``n`` image rows (no captions) around 20 centres, with sign codes of a random projection."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, DIM))
    x = centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    proj = np.random.default_rng(1).standard_normal((DIM, BITS))
    records = [Record(f"k{seed}-{i}", None) for i in range(n)]
    empty = np.zeros((0, DIM), np.float32)
    return EncodedItems(
        records, x, pack_codes(x @ proj > 0), empty, np.zeros((0, BITS // 8), np.uint8),
        np.zeros(0, np.int64),
    )  # fmt: skip


def test_auto_rule() -> None:
    assert choose_kind("auto", "float", AUTO_FLAT_BELOW - 1).name == "flat"
    assert choose_kind("auto", "float", AUTO_FLAT_BELOW).name == "hnsw"
    assert choose_kind("auto", "float", AUTO_FLOAT_IVF_FROM).name == "ivf"
    assert choose_kind("auto", "binary", AUTO_FLAT_BELOW).name == "flat"
    assert choose_kind("auto", "binary", AUTO_BINARY_IVF_FROM).name == "ivf"
    assert choose_kind("hnsw", "binary", 5).name == "hnsw"
    with pytest.raises(ValueError, match=f"needs at least {IVF_MIN_ROWS} rows"):
        choose_kind("ivf", "float", IVF_MIN_ROWS - 1)
    with pytest.raises(ValueError, match="kind must be one of auto, flat, hnsw, ivf"):
        choose_kind("lsh", "float", 10)


def test_default_params() -> None:
    p = get_kind("float", "ivf").default_params(1_000_000, 256)
    assert p["nlist"] == 4000 and p["pq_m"] == 64 and p["pq_bits"] == 8 and p["nprobe"] == 32
    assert p["rerank_factor"] == 10
    small = get_kind("float", "ivf").default_params(2_000, 256)
    assert small["nlist"] == 2_000 // 39 and 2 ** small["pq_bits"] * 39 <= 2_000
    assert get_kind("float", "ivf").default_params(10_000, 100)["pq_m"] == 25  # divisor <= d/4
    assert get_kind("binary", "hnsw").default_params(10, 64)["M"] == 16
    assert get_kind("float", "flat").default_params(10, 64) == {}


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_each_kind_grows_and_shrinks_consistently(tmp_path: Path, kind: str) -> None:
    ix = tmp_path / kind
    a, b = clustered(1500, seed=0), clustered(300, seed=1)
    create_index(ix, a, codes={"source": "test"}, model={"kind": "none"}, kind=kind)
    snap = Snapshot.open(ix)
    img = snap.collections["image"]
    assert (img.info.float_kind, img.info.binary_kind) == (kind, kind)
    assert set(img.info.raw) == ({"vectors", "codes"} if kind == "ivf" else set())
    # empty caption collections are flat whatever the kind
    assert snap.collections["text"].info.float_kind == "flat"
    append_items(ix, b)
    removed = [f"k0-{i}" for i in range(0, 1500, 7)] + ["k1-0", "k1-299"]
    delete_items(ix, removed)
    snap = Snapshot.open(ix)
    img = snap.collections["image"]
    keys = snap.meta.items(img.ids.tolist())
    all_vectors = {
        r.id: v
        for r, v in zip(
            [*a.records, *b.records],
            np.concatenate([a.image_vectors, b.image_vectors]),
            strict=True,
        )
    }
    all_codes = {
        r.id: c
        for r, c in zip(
            [*a.records, *b.records], np.concatenate([a.image_codes, b.image_codes]), strict=True
        )
    }
    assert len(img) == 1800 - len(removed) and not set(removed) & {m.key for m in keys.values()}
    for pos, iid in enumerate(img.ids.tolist()):
        np.testing.assert_array_equal(img.vectors[pos], all_vectors[keys[iid].key])
        np.testing.assert_array_equal(img.codes[pos], all_codes[keys[iid].key])
    # every row finds itself: labels inside FAISS are the renumbered positions
    probe = np.arange(0, len(img), 97)
    _, found = img.float_index.search(np.ascontiguousarray(img.vectors[probe]), 1)
    if kind == "ivf":  # PQ is lossy: the row found must at least be a close neighbour
        cos = np.einsum("nd,nd->n", img.vectors[probe], img.vectors[found[:, 0]])
        assert cos.mean() > 0.9
    else:
        assert (found[:, 0] == probe).mean() >= (1.0 if kind == "flat" else 0.9)
    dist, found = img.binary_index.search(np.ascontiguousarray(img.codes[probe]), 1)
    assert (dist[:, 0] == 0).all()
    ref = hamming_distance(img.codes[probe], img.codes)
    np.testing.assert_array_equal(ref[np.arange(len(probe)), found[:, 0]], 0)


def test_mmap_maps_instead_of_loading(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    create_index(ix, clustered(2000), codes={"source": "t"}, model={"kind": "none"}, kind="flat")
    mapped = Snapshot.open(ix, mmap=True).collections["image"]
    loaded = Snapshot.open(ix, mmap=False).collections["image"]
    assert not faiss.downcast_index(mapped.float_index).codes.is_owned
    assert faiss.downcast_index(loaded.float_index).codes.is_owned
    assert not mapped.vectors.flags.writeable
    np.testing.assert_array_equal(mapped.vectors, loaded.vectors)
    q = np.ascontiguousarray(loaded.vectors[:5])
    np.testing.assert_array_equal(
        mapped.float_index.search(q, 5)[1], loaded.float_index.search(q, 5)[1]
    )


class FloatIVFFlat(IVFKind):
    """A kind the library does not ship: float IVF with exact (unquantised) lists."""

    name = "ivfflat-test"
    family = "float"

    def empty(self, width: int, params: Mapping[str, Any]) -> Any:
        quantizer = faiss.IndexFlatIP(width)
        index = faiss.IndexIVFFlat(
            quantizer, width, int(params["nlist"]), faiss.METRIC_INNER_PRODUCT
        )
        index.own_fields = True
        quantizer.this.disown()
        return index

    def search_parameters(self, index: Any, selector: Any) -> Any:
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)


@pytest.fixture
def ivfflat() -> Iterator[IndexKind]:
    kind = register_kind(FloatIVFFlat())
    try:
        yield kind
    finally:
        unregister_kind("float", kind.name)


def test_a_kind_registered_here_works_through_the_public_api(
    tmp_path: Path, ivfflat: IndexKind
) -> None:
    """Adding a kind is one object: build, add, remove, search, save and reopen an index of it."""
    assert ivfflat.name in kind_names("float") and ivfflat.name not in kind_names("binary")
    with pytest.raises(ValueError, match="exists"):
        register_kind(FloatIVFFlat())
    ix = tmp_path / "ix"
    a, b = clustered(1500, seed=0), clustered(300, seed=1)
    # nprobe above nlist: every list is searched, so the ranking must be exact
    create_index(
        ix, a, codes={"source": "test"}, model={"kind": "none"}, float_kind=ivfflat.name,
        binary_kind="flat", params={"float": {"nprobe": 10_000}},
    )  # fmt: skip
    append_items(ix, b)
    removed = [f"k0-{i}" for i in range(0, 1500, 5)] + ["k1-7"]
    delete_items(ix, removed)
    with Searcher(ix, mmap=True) as searcher:  # reopened from disk, memory-mapped lists
        col = searcher.snapshot.collections["image"]
        assert col.info.float_kind == ivfflat.name and col.info.raw == ["vectors"]
        assert isinstance(faiss.downcast_index(col.float_index), faiss.IndexIVFFlat)
        assert len(col) == 1800 - len(removed)
        keys = searcher.snapshot.meta.items(col.ids.tolist())
        assert not set(removed) & {m.key for m in keys.values()}
        everything = np.concatenate([a.image_vectors, b.image_vectors])
        by_key = dict(zip([r.id for r in [*a.records, *b.records]], everything, strict=True))
        rows = np.stack([by_key[keys[i].key] for i in col.ids.tolist()])
        np.testing.assert_array_equal(col.vectors, rows)  # the raw rows stored beside it
        q = clustered(40, seed=2).image_vectors
        hits = searcher.search("image", vectors=q, k=10)
        scores = q @ rows.T  # brute force, ties by position
        order = np.lexsort((np.broadcast_to(np.arange(len(rows)), scores.shape), -scores))[:, :10]
        np.testing.assert_array_equal(hits.ids, col.ids[order])
        np.testing.assert_allclose(
            hits.scores, np.take_along_axis(scores, order, 1), rtol=1e-5, atol=1e-5
        )
    unregister_kind("float", ivfflat.name)  # an index of an unknown kind is named as such
    with pytest.raises(IndexFormatError, match="ivfflat-test"):
        Snapshot.open(ix)

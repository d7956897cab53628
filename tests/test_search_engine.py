"""Searcher on indexes of precomputed vectors, against slow obvious NumPy references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xmodal.datasets.record import Record
from xmodal.evaluation import hamming_distance, pack_codes, retrieval_recall
from xmodal.index import build_index_from_vectors
from xmodal.index.codes import CodeRotation
from xmodal.search import Result, Searcher, engine, index_metrics, write_results_html

N, DIM, BITS, CAPTIONS = 1000, 24, 16, 2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """BLAS / OpenMP threads crawl when they fight over an oversubscribed machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def dataset(seed: int = 0) -> tuple[list[Record], np.ndarray, np.ndarray, np.ndarray]:
    """Clustered images, two noisy captions each, labels = cluster name; 16-bit codes (many ties)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, DIM))
    cluster = rng.integers(0, 12, N)
    images = unit(centres[cluster] + 0.6 * rng.standard_normal((N, DIM)))
    texts = unit(
        np.repeat(images, CAPTIONS, axis=0) + 0.5 * rng.standard_normal((N * CAPTIONS, DIM))
    )
    records = [
        Record(
            f"item{i:04d}",
            None,
            tuple(f"text {i}.{j}" for j in range(CAPTIONS)),
            (f"c{cluster[i]}",),
        )
        for i in range(N)
    ]
    return records, images, texts, np.repeat(np.arange(N), CAPTIONS)


@pytest.fixture(scope="module")
def data() -> tuple[list[Record], np.ndarray, np.ndarray, np.ndarray]:
    return dataset()


@pytest.fixture(scope="module", params=["flat", "hnsw", "ivf"])
def searcher(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data
) -> Searcher:
    records, images, texts, owner = data
    ix = tmp_path_factory.mktemp("ix") / request.param
    params = {"float": {"nprobe": 64}, "binary": {"nprobe": 64}} if request.param == "ivf" else None
    build_index_from_vectors(
        ix, records, images, texts, owner, bits=BITS, kind=request.param, params=params
    )
    return Searcher(ix)


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory, data) -> Searcher:
    records, images, texts, owner = data
    ix = tmp_path_factory.mktemp("flat") / "ix"
    build_index_from_vectors(ix, records, images, texts, owner, bits=BITS, kind="flat")
    return Searcher(ix)


def rotation(s: Searcher) -> CodeRotation:
    with open(s.snapshot.folder / "rotation.npz", "rb") as f:
        return CodeRotation.load(f)  # type: ignore[arg-type]


def reference_float(q: np.ndarray, db: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = q @ db.T
    order = np.lexsort((np.broadcast_to(np.arange(len(db)), scores.shape), -scores), axis=1)[:, :k]
    return order, np.take_along_axis(scores, order, 1)


def reference_hamming(
    q_codes: np.ndarray, db_codes: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by Hamming distance, ties by database position (insertion order)."""
    dist = hamming_distance(q_codes, db_codes)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(dist, order, 1)


def test_float_mode_is_exact_on_flat(flat: Searcher, data) -> None:
    _, images, texts, _ = data
    q = texts[:50]
    hits = flat.search("image", vectors=q, k=10)
    order, scores = reference_float(q, images, 10)
    np.testing.assert_array_equal(hits.ids, order)  # image row id i is item i here
    np.testing.assert_allclose(hits.scores, scores, rtol=1e-5, atol=1e-6)
    assert hits.distances is None


def test_hamming_mode_is_exact_with_ties_by_insertion_order(flat: Searcher, data) -> None:
    _, images, texts, _ = data
    rot = rotation(flat)
    q_codes = pack_codes(rot.encode(texts[:80]))
    db_codes = pack_codes(rot.encode(images))
    np.testing.assert_array_equal(flat.snapshot.collections["image"].codes, db_codes)
    hits = flat.search("image", codes=q_codes, k=25, mode="hamming")
    order, dist = reference_hamming(q_codes, db_codes, 25)
    assert (np.diff(np.sort(dist, axis=1)) == 0).any()  # 16 bits over 1000 rows: ties galore
    np.testing.assert_array_equal(hits.distances, dist)
    np.testing.assert_array_equal(hits.ids, order)
    np.testing.assert_array_equal(hits.scores, -dist.astype(np.float32))
    # vectors alone: codes are made with the stored rotation
    from_vectors = flat.search("image", vectors=texts[:80], k=25, mode="hamming")
    np.testing.assert_array_equal(from_vectors.ids, hits.ids)


@pytest.mark.parametrize("candidates", [40, N])
def test_two_stage_reranks_hamming_candidates(flat: Searcher, data, candidates: int) -> None:
    _, images, texts, _ = data
    rot = rotation(flat)
    q = texts[100:140]
    cand, _ = reference_hamming(
        pack_codes(rot.encode(q)), pack_codes(rot.encode(images)), candidates
    )
    hits = flat.search("image", vectors=q, k=10, mode="two-stage", candidates=candidates)
    for row in range(len(q)):
        c = cand[row]
        s = images[c] @ q[row]
        best = c[np.lexsort((c, -s))[:10]]
        np.testing.assert_array_equal(hits.ids[row], best)
    if candidates == N:  # every row re-ranked: exact float search
        np.testing.assert_array_equal(hits.ids, reference_float(q, images, 10)[0])


def test_each_kind_finds_the_exact_neighbours_mostly(searcher: Searcher, data) -> None:
    _, images, texts, _ = data
    q = texts[::7]
    exact, _ = reference_float(q, images, 10)
    for mode in ("float", "two-stage"):
        hits = searcher.search("image", vectors=q, k=10, mode=mode, candidates=300)
        recall = np.mean([len(set(h) & set(e)) / 10 for h, e in zip(hits.ids, exact, strict=True)])
        kind = searcher.snapshot.collections["image"].info.float_kind
        # IVF-PQ (3 bytes a row here) is coarse but re-ranks 10 k candidates exactly; two-stage
        # is bounded by 16-bit Hamming candidates
        floor = {"float": 0.85 if kind == "ivf" else 0.9, "two-stage": 0.75}[mode]
        assert recall > floor, (mode, recall)


@pytest.mark.parametrize("force_selector", [False, True])
def test_label_filter(
    searcher: Searcher, data, force_selector: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    records, images, texts, owner = data
    if force_selector:  # go through FAISS IDSelectorBitmap instead of the exact subset scan
        monkeypatch.setattr(engine, "EXACT_FILTER_MAX", 0)
    allowed = np.asarray([i for i, r in enumerate(records) if r.labels[0] in ("c1", "c4")])
    q = texts[::37]
    kind = searcher.snapshot.collections["image"].info.float_kind
    for mode in ("float", "hamming", "two-stage"):
        hits = searcher.search("image", vectors=q, k=8, mode=mode, labels=["c1", "c4"])
        assert np.isin(hits.ids, allowed).all(), mode
        assert hits.ids.shape == (len(q), 8)
    exact_sub = allowed[reference_float(q, images[allowed], 8)[0]]
    hits = searcher.search("image", vectors=q, k=8, labels=["c1", "c4"])
    if kind == "flat" or not force_selector:
        np.testing.assert_array_equal(hits.ids, exact_sub)
    # caption rows inherit their item's label
    hits = searcher.search("text", vectors=images[:5], k=6, labels="c4")
    assert all(records[owner[t]].labels == ("c4",) for t in hits.ids.ravel())
    empty = searcher.search("image", vectors=q, k=5, labels=["no such label"])
    assert empty.ids.shape == (len(q), 0)


def test_text_rows_and_results(flat: Searcher, data) -> None:
    records, images, texts, owner = data
    results = flat.image_to_text(images[3], k=4)
    assert [r.rank for r in results] == [1, 2, 3, 4]
    order, scores = reference_float(images[3:4], texts, 4)
    for r, t, s in zip(results, order[0], scores[0], strict=True):
        assert isinstance(r, Result) and r.modality == "text" and r.row == t
        assert r.id == records[owner[t]].id and r.caption == f"text {owner[t]}.{t % CAPTIONS}"
        assert r.captions == records[owner[t]].captions and r.labels == records[owner[t]].labels
        assert r.score == pytest.approx(s, abs=1e-5)
    batch = flat.text_to_image(texts[:3], k=2)
    assert len(batch) == 3 and [r.id for r in batch[1]] == [
        r.id for r in flat.text_to_image(texts[1], k=2)
    ]
    assert flat.text_to_text(texts[0], k=1)[0].caption == "text 0.0"  # a caption finds itself
    assert flat.image_to_image(images[9], k=1, mode="two-stage")[0].id == records[9].id
    assert len(flat.text_to_image(texts[0], k=5000)) == N  # k larger than the collection


def test_bad_queries_are_named(flat: Searcher, data) -> None:
    _, images, _, _ = data
    with pytest.raises(ValueError, match=r"query vectors must be float \[n, 24\]"):
        flat.search("image", vectors=np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        flat.search("image", vectors=np.full((1, DIM), np.nan, np.float32))
    with pytest.raises(ValueError, match="mode must be one of float, hamming, two-stage"):
        flat.search("image", vectors=images[:1], mode="cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be a positive integer"):
        flat.search("image", vectors=images[:1], k=0)
    with pytest.raises(ValueError, match="target must be"):
        flat.search("caption", vectors=images[:1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"query codes must be packed uint8 \[n, 2\]"):
        flat.search("image", codes=np.zeros((1, 3), np.uint8), mode="hamming")
    with pytest.raises(ValueError, match="needs query vectors"):
        flat.search("image", codes=np.zeros((1, 2), np.uint8), mode="two-stage")
    with pytest.raises(ValueError, match="labels must be"):
        flat.search("image", vectors=images[:1], labels=[])
    with pytest.raises(ValueError, match="no model to encode"):
        flat.text_to_image("a dog")


def test_index_metrics_match_the_evaluation_functions(tmp_path: Path, data) -> None:
    records, images, texts, owner = data
    n = 150  # the metrics rank every row against every row
    records, images, texts, owner = (
        records[:n],
        images[:n],
        texts[: n * CAPTIONS],
        owner[: n * CAPTIONS],
    )
    build_index_from_vectors(tmp_path / "ix", records, images, texts, owner, bits=BITS, kind="flat")
    flat = Searcher(tmp_path / "ix")
    got = index_metrics(flat, "float")
    want = retrieval_recall(images @ texts.T, owner)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    from xmodal.evaluation import cross_modal_map

    labels = np.asarray([[r.labels[0] == f"c{c}" for c in range(12)] for r in records])
    maps = cross_modal_map(images, texts, labels, labels[owner])
    for key, value in maps.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    rot = rotation(flat)
    hamming = index_metrics(flat, "hamming")
    hmaps = cross_modal_map(
        rot.encode(images), rot.encode(texts), labels, labels[owner], hamming=True
    )
    for key, value in hmaps.items():
        assert hamming[key] == pytest.approx(value, abs=1e-9), key


def test_results_page(flat: Searcher, tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (4, 4), "red").save(png)
    results = [
        Result(1, "a<b>", 0.5, "image", 0, str(png), None, ("x & y",), ()),
        Result(2, "c", 0.25, "text", 3, None, "cap", (), (), 4),
    ]
    page = write_results_html({"dogs & <cats>": results}, tmp_path / "r.html").read_text()
    assert "data:image/png;base64," in page and "dogs &amp; &lt;cats&gt;" in page
    assert "x &amp; y" in page and "a&lt;b&gt;" in page and "d=4" in page


def test_ivf_pq_reranks_its_candidates_exactly(tmp_path: Path, data) -> None:
    records, images, texts, owner = data
    q = texts[::7]
    exact, _ = reference_float(q, images, 10)
    recall = {}
    for factor in (0, 10):
        ix = tmp_path / f"ivf{factor}"
        params = {"float": {"nprobe": 64, "rerank_factor": factor}}
        build_index_from_vectors(
            ix, records, images, texts, owner, bits=BITS, kind="ivf", params=params
        )
        hits = Searcher(ix).search("image", vectors=q, k=10, mode="float")
        recall[factor] = np.mean(
            [len(set(h) & set(e)) / 10 for h, e in zip(hits.ids, exact, strict=True)]
        )
        if factor:  # re-ranked scores are exact inner products, best first, ties by row
            rows = np.asarray([[int(i) for i in h] for h in hits.ids])
            np.testing.assert_allclose(
                hits.scores, np.einsum("qkd,qd->qk", images[rows], q), atol=1e-5
            )
            assert np.all(np.diff(hits.scores, axis=1) <= 1e-7)
    assert recall[10] > 0.9 and recall[10] > recall[0] + 0.2, recall

"""Query-bank normalisation: the inverted-softmax scores, their storage in a run, and the preset
that uses them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import logsumexp

from xmodal.errors import BadInputError
from xmodal.evaluation import retrieval_recall
from xmodal.querybank import QueryBank, load_query_bank
from xmodal.training import TrainConfig


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _per_direction(
    bank: QueryBank, img: np.ndarray, txt: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cosine, image→text and text→image scores of the inverted softmax, each direction written
    out on its own (float64, SciPy's logsumexp)."""
    beta, sim = bank.beta, img.astype(np.float64) @ txt.T.astype(np.float64)
    text_norm = logsumexp(beta * (txt.astype(np.float64) @ bank.image.T), axis=1) / beta
    image_norm = logsumexp(beta * (img.astype(np.float64) @ bank.text.T), axis=1) / beta
    return sim, sim - text_norm[None, :], sim - image_norm[:, None]


@pytest.fixture
def spaces() -> tuple[QueryBank, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 16))
    img = _unit(centres + 0.4 * rng.normal(size=centres.shape))
    t2i = np.repeat(np.arange(40), 3)
    txt = _unit(centres[t2i] + 0.8 * rng.normal(size=(120, 16)))
    bank = QueryBank(_unit(rng.normal(size=(300, 16))), _unit(rng.normal(size=(500, 16))), 9.0)
    return bank, img, txt, t2i


def test_one_matrix_ranks_both_directions_as_the_per_direction_formula(spaces) -> None:
    bank, img, txt, t2i = spaces
    _, i2t_scores, t2i_scores = _per_direction(bank, img, txt)
    got = retrieval_recall(bank.similarity(img, txt), t2i)
    i2t = retrieval_recall(i2t_scores, t2i)
    t2i_ref = retrieval_recall(t2i_scores, t2i)
    for k in ("i2t_r1", "i2t_r5", "i2t_r10"):
        assert got[k] == i2t[k]
    for k in ("t2i_r1", "t2i_r5", "t2i_r10"):
        assert got[k] == t2i_ref[k]
    # the normalised scores differ from the plain cosine only by per-item constants
    np.testing.assert_allclose(
        bank.similarity(img, txt) - img @ txt.T,
        bank.image_bias(img)[:, None] + bank.text_bias(txt)[None, :],
        atol=1e-5,
    )


def test_a_hub_that_every_bank_query_finds_close_is_demoted() -> None:
    rng = np.random.default_rng(0)
    queries = _unit(rng.normal(size=(200, 8)) + 3.0 * np.eye(8)[0])  # all lean towards e0
    e = np.eye(8)
    hub = _unit(e[:1] + e[1:2])  # halfway between the bank's queries and this one
    near = _unit(e[1:2] + 0.6 * e[2:3])  # the query's true match, far from the bank
    query = _unit(e[1:2] + 0.5 * e[:1])
    gallery = np.concatenate([hub, near])
    plain = (query @ gallery.T)[0]
    assert plain[0] > plain[1]  # by cosine the hub wins
    bank = QueryBank(queries, queries, 10.0)
    bias = bank.image_bias(gallery)
    assert bias[0] < bias[1]
    normalised = plain + bias
    assert normalised[1] > normalised[0]  # normalised, the match wins


def test_chunked_bias_matches_one_logsumexp_and_large_beta_keeps_it_finite() -> None:
    rng = np.random.default_rng(1)
    gallery = _unit(rng.normal(size=(5000, 12)))  # more rows than one block
    bank = QueryBank(_unit(rng.normal(size=(50, 12))), _unit(rng.normal(size=(70, 12))), 200.0)
    expected = -logsumexp(200.0 * gallery.astype(np.float64) @ bank.text.T, axis=1) / 200.0
    got = bank.image_bias(gallery)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_save_load_round_trip_and_bad_files(tmp_path, spaces) -> None:
    bank = spaces[0]
    path = bank.save(tmp_path / "bank.npz")
    back = load_query_bank(path)
    assert back.beta == bank.beta
    np.testing.assert_array_equal(back.image, bank.image)
    np.testing.assert_array_equal(back.text, bank.text)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BadInputError, match=r"junk\.npz.*not a readable query bank"):
        load_query_bank(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", format=np.array("something/1"), beta=1.0, image=bank.image,
             text=bank.text)  # fmt: skip
    with pytest.raises(BadInputError, match="not an xmodal-query-bank/1 file"):
        load_query_bank(tmp_path / "other.npz")


def test_bad_banks_and_options_are_clear_errors(spaces) -> None:
    bank, img, _, _ = spaces
    with pytest.raises(ValueError, match="beta must be > 0"):
        QueryBank(bank.image, bank.text, 0.0)
    with pytest.raises(ValueError, match="dimensions differ"):
        QueryBank(bank.image, bank.text[:, :8], 1.0)
    with pytest.raises(ValueError, match="do not fit a query bank of dimension 16"):
        bank.text_bias(img[:, :8])
    with pytest.raises(ValueError, match="query_bank_beta must be >= 0"):
        TrainConfig(query_bank_beta=-1.0)
    with pytest.raises(ValueError, match="query_bank_size must be >= 1"):
        TrainConfig(query_bank_size=0)


def test_the_preset_stores_its_bank_and_evaluate_scores_with_it(openmoji, tmp_path) -> None:
    """``cca-flickr8k-concat-qb`` on a real slice: the embeddings are those of
    ``cca-flickr8k-concat``, the bank is stored, checksummed and applied by ``evaluate``, and its
    recalls are the per-direction inverted softmax over the stored bank."""
    from xmodal.datasets import load_dataset
    from xmodal.pipeline import evaluate, train
    from xmodal.training.loaded import LoadedRun
    from xmodal.training.run import CHECKSUMS, QUERY_BANK

    data = openmoji(step=40)
    quiet = {"device": "cpu", "progress": False}
    a = train(data, tmp_path / "qb", preset="cca-flickr8k-concat-qb", train_options=quiet)
    b = train(data, tmp_path / "plain", preset="cca-flickr8k-concat", train_options=quiet)
    assert a["val"]["rsum_cosine"] == b["val"]["rsum"]
    config = json.loads((tmp_path / "qb" / "config.json").read_text())
    assert config["train"]["query_bank_beta"] == 13.0
    assert QUERY_BANK in json.loads((tmp_path / "qb" / CHECKSUMS).read_text())["files"]
    assert not (tmp_path / "plain" / QUERY_BANK).exists()

    test = evaluate(tmp_path / "qb", split="test", progress=False)
    run = LoadedRun.open(tmp_path / "qb")
    assert run.query_bank is not None and run.query_bank.beta == 13.0
    n_train = len(run.split.train)
    assert len(run.query_bank.image) == n_train  # fewer than 5,000: the whole train split
    emb = run.embed(run.encode(load_dataset(data), progress=False).paired(run.split.test))
    _, i2t_scores, t2i_scores = _per_direction(run.query_bank, emb.image, emb.text)
    i2t = retrieval_recall(i2t_scores, emb.text_to_image)
    t2i = retrieval_recall(t2i_scores, emb.text_to_image)
    for k in ("i2t_r1", "i2t_r5", "i2t_r10"):
        assert test[k] == pytest.approx(i2t[k])
    for k in ("t2i_r1", "t2i_r5", "t2i_r10"):
        assert test[k] == pytest.approx(t2i[k])
    assert test["rsum_cosine"] == pytest.approx(retrieval_recall(emb.image @ emb.text.T,
                                                                 emb.text_to_image)["rsum"])  # fmt: skip


def test_a_bank_altered_or_lost_after_training_is_an_error(openmoji, tmp_path) -> None:
    from xmodal.pipeline import train
    from xmodal.training.loaded import LoadedRun
    from xmodal.training.run import QUERY_BANK

    run = tmp_path / "qb"
    train(openmoji(step=40), run, "cca",
          train_options={"device": "cpu", "progress": False, "query_bank_beta": 5.0})  # fmt: skip
    bank = load_query_bank(run / QUERY_BANK)
    QueryBank(bank.image, bank.text, 50.0).save(run / QUERY_BANK)
    with pytest.raises(BadInputError, match=QUERY_BANK):
        LoadedRun.open(run)
    (run / QUERY_BANK).unlink()
    with pytest.raises(BadInputError, match=QUERY_BANK):
        LoadedRun.open(run)


def _assert_ranked_by(hits, reference: np.ndarray, ids: np.ndarray, k: int) -> None:
    """``hits`` are each query's ``k`` best rows by ``reference`` (ties within 1e-5 either way)."""
    best = -np.sort(-reference, axis=1)[:, :k]
    np.testing.assert_allclose(hits.scores, best, atol=1e-5)
    column = {int(i): j for j, i in enumerate(ids)}
    got = reference[np.arange(len(reference))[:, None], np.vectorize(column.get)(hits.ids)]
    np.testing.assert_allclose(got, best, atol=1e-5)


def test_an_index_of_a_query_bank_run_ranks_cross_modal_searches_by_the_normalised_score(
    openmoji, tmp_path
) -> None:
    """The index carries the run's bank; text→image and image→text searches rank by
    cos + bias (the full-matrix ranking evaluate uses), same-modality searches by the cosine."""
    from xmodal.index import build_index
    from xmodal.pipeline import train
    from xmodal.search import Searcher, index_metrics
    from xmodal.training.loaded import LoadedRun

    data = openmoji(step=40, count=60)
    run_dir, index_dir = tmp_path / "run", tmp_path / "index"
    train(data, run_dir, "cca", train_options={"device": "cpu", "progress": False,
                                               "query_bank_beta": 13.0})  # fmt: skip
    build_index(run_dir, data, index_dir, kind="flat", progress=False)
    bank = LoadedRun.open(run_dir).query_bank
    assert bank is not None
    with Searcher(index_dir) as searcher:
        assert searcher.query_bank() is not None
        images = np.asarray(searcher.snapshot.collections["image"].vectors)
        texts = np.asarray(searcher.snapshot.collections["text"].vectors)
        image_ids = searcher.snapshot.collections["image"].ids
        text_ids = searcher.snapshot.collections["text"].ids
        # the score each search should rank by: cos + the row's bias (the query's own bias,
        # constant within its ranking, is not part of it)
        t2i_ref = texts @ images.T + bank.image_bias(images)[None, :]
        i2t_ref = images @ texts.T + bank.text_bias(texts)[None, :]
        k = 6  # 6 × 10 candidates cover the 60 images: the ranking is exact
        t2i = searcher.search("image", vectors=texts, k=k, query_modality="text")
        _assert_ranked_by(t2i, t2i_ref, image_ids, k)
        plain = searcher.search("image", vectors=texts, k=k)
        _assert_ranked_by(plain, texts @ images.T, image_ids, k)
        assert (plain.ids != t2i.ids).any()
        k = -(-len(texts) // 10)  # candidates cover every caption: exact again
        i2t = searcher.search("text", vectors=images, k=k, query_modality="image")
        _assert_ranked_by(i2t, i2t_ref, text_ids, k)
        i2i = searcher.search("image", vectors=images, k=6, query_modality="image")
        _assert_ranked_by(i2i, images @ images.T, image_ids, 6)
        # index_metrics searches with the query's modality: the normalised recalls
        meta = searcher.snapshot.meta.texts(text_ids.tolist())
        owner_ids = np.asarray([meta[int(t)].item for t in text_ids])
        owner = searcher.snapshot.collections["image"].positions(owner_ids)
        ranked = index_metrics(searcher, with_map=False)
        expected = retrieval_recall(bank.similarity(images, texts), owner)
        plain = retrieval_recall(images @ texts.T, owner)
        assert expected["rsum"] != pytest.approx(plain["rsum"])  # the check tells them apart
        for key in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "rsum"):
            assert ranked[key] == pytest.approx(expected[key])
        # the named directions pass the query's modality on
        caption = json.loads((data / "data.jsonl").read_text().splitlines()[0])["captions"][0]
        vector, _ = searcher.embed_texts([caption])
        named = [r.id for r in searcher.text_to_image(caption, 6)]
        direct = searcher.search("image", vectors=vector, k=6, query_modality="text")
        assert named == [r.id for r in direct.results()[0]]

"""tfidf: fitted TF-IDF (+ truncated SVD), checked against scikit-learn run directly."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from xmodal.encoders import get_text_encoder
from xmodal.encoders.tfidf import TfidfConfig, TfidfEncoder
from xmodal.errors import BadInputError

TRAIN = [
    "a dog runs on the beach",
    "a brown dog catches a ball",
    "two dogs play in the snow",
    "a cat sleeps on a red sofa",
    "the cat watches a bird",
    "a plate of pasta with tomato sauce",
    "fresh pasta and bread on a table",
    "a man rides a bike down the street",
    "a woman rides a horse on the beach",
    "children play football in the park",
    "a red car parked on the street",
    "a bird sits on a branch",
]
QUERIES = ["dog on the beach", "pasta", "unknownword", "a red bike"]


def reference(dim: int) -> np.ndarray:
    """The same transform written out with scikit-learn (fit on TRAIN, encode QUERIES)."""
    vec = TfidfVectorizer(max_features=50_000, sublinear_tf=True, dtype=np.float32)
    svd = TruncatedSVD(n_components=dim, algorithm="randomized", random_state=0)
    svd.fit(vec.fit_transform(TRAIN))
    z = svd.transform(vec.transform(QUERIES)).astype(np.float32)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.where(norms > 0, norms, 1)


def test_matches_sklearn_pipeline() -> None:
    enc = get_text_encoder("tfidf", dim=5)
    assert enc.needs_fit and not enc.is_fitted
    enc.fit(TRAIN)
    out = enc.encode(QUERIES, batch_size=3, progress=False)
    assert out.shape == (4, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference(5), atol=1e-5)
    assert np.all(out[2] == 0), "a text with no known word maps to the zero vector"
    np.testing.assert_allclose(np.linalg.norm(out[[0, 1, 3]], axis=1), 1.0, atol=1e-5)


def test_without_svd_is_plain_tfidf() -> None:
    enc = TfidfEncoder(TfidfConfig(svd=False)).fit(TRAIN)
    vec = TfidfVectorizer(sublinear_tf=True).fit(TRAIN)
    assert enc.dim == len(vec.vocabulary_)
    np.testing.assert_allclose(
        enc.encode(QUERIES, progress=False), vec.transform(QUERIES).toarray(), atol=1e-6
    )


def test_save_load_round_trip(tmp_path: Path) -> None:
    enc = TfidfEncoder(TfidfConfig(dim=4)).fit(TRAIN)
    path = enc.save(tmp_path / "run" / "tfidf.joblib")
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    loaded = get_text_encoder("tfidf", path=path)
    assert loaded.key == enc.key and loaded.dim == 4
    np.testing.assert_array_equal(
        loaded.encode(QUERIES, progress=False), enc.encode(QUERIES, progress=False)
    )


def test_key_hashes_the_fitted_state() -> None:
    a = TfidfEncoder(TfidfConfig(dim=4)).fit(TRAIN)
    b = TfidfEncoder(TfidfConfig(dim=4)).fit(TRAIN)
    c = TfidfEncoder(TfidfConfig(dim=4)).fit([*TRAIN, "a zebra crossing"])
    assert a.key == b.key
    assert a.key != c.key
    assert a.key.startswith("tfidf@") and a.key.endswith("/d4")


def test_unfitted_use_is_refused(tmp_path: Path) -> None:
    enc = TfidfEncoder()
    with pytest.raises(RuntimeError, match="not fitted"):
        enc.encode(["x"], progress=False)
    with pytest.raises(RuntimeError, match="not fitted"):
        _ = enc.key
    with pytest.raises(RuntimeError, match="unfitted"):
        enc.save(tmp_path / "x.joblib")


def test_small_corpus_caps_dim_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="dim is 3"):
        enc = TfidfEncoder(TfidfConfig(dim=512)).fit(["red car", "blue car", "green car"])
    assert enc.dim == 3
    assert enc.encode(["red"], progress=False).shape == (1, 3)


def test_bad_state_files_are_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"not a joblib file")
    with pytest.raises(BadInputError, match=r"junk\.joblib"):
        TfidfEncoder.load(junk)
    with pytest.raises(BadInputError, match="not found"):
        TfidfEncoder.load(tmp_path / "missing.joblib")
    import joblib

    other = tmp_path / "other.joblib"
    joblib.dump({"something": 1}, other)  # the format of earlier versions: refused unread
    with pytest.raises(BadInputError, match=r"other\.joblib: this tfidf state is a pickle"):
        TfidfEncoder.load(other)
    import zipfile

    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("state.json", '{"format": "something-else"}')
    with pytest.raises(BadInputError, match="not an xmodal tfidf state"):
        TfidfEncoder.load(foreign)


class _RunsCode:
    """Unpickling this calls ``open(path, "w")``: what a hostile state file would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("name", ["tfidf", "bow"])
def test_a_pickle_that_would_run_code_is_refused_and_never_run(tmp_path: Path, name) -> None:
    import pickle

    proof = tmp_path / "code-ran"
    state = tmp_path / "text_encoder.state"
    state.write_bytes(pickle.dumps({"format": "xmodal-tfidf", "x": _RunsCode(proof)}, protocol=4))
    with pytest.raises(BadInputError, match="is a pickle, which xmodal never loads"):
        get_text_encoder(name, path=state)
    assert not proof.exists()
    pickle.loads(state.read_bytes())  # the crafted file really does run code when unpickled
    assert proof.exists()


def test_saved_state_is_json_and_npy_only(tmp_path: Path) -> None:
    import json
    import zipfile

    enc = get_text_encoder("tfidf", dim=4).fit(TRAIN)
    path = enc.save(tmp_path / "text_encoder.state")
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["components.npy", "idf.npy", "state.json"]
        state = json.loads(z.read("state.json"))
        for n in ("components.npy", "idf.npy"):
            import io

            np.load(io.BytesIO(z.read(n)), allow_pickle=False)
    assert state["digest"] == enc.key.split("@")[1].split("/")[0]
    assert state["vocabulary"]["dog"] == enc._vectorizer.vocabulary_["dog"]


def test_bow_round_trip_and_its_own_name(tmp_path: Path) -> None:
    from xmodal.datasets import Dataset, Record
    from xmodal.features import FeatureCache

    bow = get_text_encoder("bow")
    assert bow.name == "bow"
    ds = Dataset("d", tmp_path, [Record("a", None, ("a red car",))])
    with pytest.raises(ValueError, match="text encoder 'bow' must be fitted"):
        FeatureCache(tmp_path / "cache").get_or_encode(ds, text_encoder=bow, progress=False)
    bow.fit(TRAIN)
    loaded = get_text_encoder("bow", path=bow.save(tmp_path / "bow.state"))
    assert loaded.key == bow.key and loaded.name == "bow"
    np.testing.assert_array_equal(
        loaded.encode(QUERIES, progress=False), bow.encode(QUERIES, progress=False)
    )


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="unknown tfidf option"):
        get_text_encoder("tfidf", dims=3)
    with pytest.raises(ValueError, match="dim must be"):
        TfidfConfig(dim=0)
    with pytest.raises(ValueError, match="zero texts"):
        TfidfEncoder().fit([])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="cannot fit tfidf"):
            TfidfEncoder().fit(["", " "])


def test_bow_is_word_presence_without_idf() -> None:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    enc = get_text_encoder("bow", svd=False).fit(TRAIN)
    counts = CountVectorizer(binary=True).fit(TRAIN)
    expected = normalize(counts.transform(QUERIES).astype(np.float64)).toarray()
    np.testing.assert_allclose(enc.encode(QUERIES, progress=False), expected, atol=1e-6)
    # a word said twice counts once
    twice = enc.encode(["dog dog beach"], progress=False)
    once = enc.encode(["dog beach"], progress=False)
    np.testing.assert_allclose(twice, once, atol=1e-6)
    reduced = get_text_encoder("bow", dim=3).fit(TRAIN)
    assert reduced.encode(QUERIES, progress=False).shape == (4, 3)
    assert reduced.key != get_text_encoder("tfidf", dim=3).fit(TRAIN).key


def test_bow_state_round_trip_and_states_without_the_newer_options_load(tmp_path: Path) -> None:
    import json
    import zipfile

    bow = get_text_encoder("bow", dim=3).fit(TRAIN)
    loaded = get_text_encoder("bow", path=bow.save(tmp_path / "bow.state"))
    assert loaded.key == bow.key and loaded.config.binary and not loaded.config.use_idf
    # a state written before use_idf / binary existed: no such keys, same digest
    enc = TfidfEncoder(TfidfConfig(dim=3)).fit(TRAIN)
    with zipfile.ZipFile(enc.save(tmp_path / "new.state")) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    state = json.loads(parts["state.json"])
    del state["config"]["use_idf"], state["config"]["binary"]
    parts["state.json"] = json.dumps(state).encode()
    with zipfile.ZipFile(tmp_path / "old.state", "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)
    assert TfidfEncoder.load(tmp_path / "old.state").key == enc.key

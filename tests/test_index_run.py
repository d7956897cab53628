"""Indexes of a real (tiny) trained run on a slice of the shipped OpenMoji set: the same metrics
through the index as through ``xmodal evaluate``, the CLI, codes from rotations and hash heads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import openmoji_slice
from typer.testing import CliRunner

from xmodal.cli import app
from xmodal.evaluation import cross_modal_map, pack_codes
from xmodal.index import build_index
from xmodal.index.codes import fit_rotation
from xmodal.index.export import export_run
from xmodal.pipeline import LoadedRun, evaluate, train
from xmodal.search import Searcher, index_metrics

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def emoji(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two disjoint slices (every 80th emoji, and the next ones), a cache, a trained run."""
    root = tmp_path_factory.mktemp("emoji")
    paths = {
        "data": openmoji_slice(root / "data", 80),
        "more": openmoji_slice(root / "more", 400, start=40),
        "cache": root / "cache",
        "run": root / "run",
    }
    train(
        paths["data"], paths["run"], "infonce", split="random:0.6,0.2,0.2",
        method_options={"embed_dim": 32}, train_options={"device": "cpu", "progress": False, "epochs": 3},
        cache_dir=paths["cache"],
    )  # fmt: skip
    return paths


def test_index_metrics_equal_evaluate(
    emoji: dict[str, Path], tmp_path: Path, one_blas_thread
) -> None:
    manifest = build_index(
        emoji["run"], emoji["data"], tmp_path / "ix", bits=16, kind="flat", cache_dir=emoji["cache"],
        device="cpu", progress=False,
    )  # fmt: skip
    assert manifest.codes["source"] == "itq" and manifest.codes["fit_on"] == "run training split"
    model_dir = tmp_path / "ix" / "versions" / "v000001" / "model"
    assert manifest.model["kind"] == "run" and (model_dir / "model.pt").is_file()
    assert manifest.model["text_encoder_key"].startswith("minilm")
    searcher = Searcher(tmp_path / "ix", device="cpu")
    reference = evaluate(emoji["run"], split="all", cache_dir=emoji["cache"], progress=False)
    got = index_metrics(searcher, "float")
    assert set(got) == set(reference)
    for key, value in reference.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key

    # Hamming: the stored ITQ rotation is the one fitted on the run's training embeddings, and
    # Hamming mAP through the index equals mAP of independently computed codes.
    run = LoadedRun.open(emoji["run"], "cpu")
    from xmodal.datasets import load_dataset

    ds = load_dataset(emoji["data"])
    encoded = run.encode(ds, emoji["cache"], progress=False)
    train_emb = run.embed(encoded.paired(run.split.train))
    rotation = fit_rotation(np.concatenate([train_emb.image, train_emb.text]), 16, "itq")
    everything = run.embed(encoded.paired(ds.ids))
    snap = searcher.snapshot
    np.testing.assert_array_equal(
        snap.collections["image"].codes, pack_codes(rotation.encode(everything.image))
    )
    np.testing.assert_allclose(snap.collections["text"].vectors, everything.text, atol=1e-6)
    labels = ds.label_matrix()
    hamming = index_metrics(searcher, "hamming")
    want = cross_modal_map(
        rotation.encode(everything.image), rotation.encode(everything.text), labels,
        labels[everything.text_to_image], hamming=True,
    )  # fmt: skip
    for key, value in want.items():
        assert hamming[key] == pytest.approx(value, abs=1e-9), key

    # queries are encoded exactly like the indexed rows
    caption = ds.records[3].captions[0]
    vec, codes = searcher.embed_texts([caption])
    row = snap.collections["text"].positions(np.asarray([snap.meta.texts_of_items([3])[0].id]))
    np.testing.assert_allclose(vec[0], snap.collections["text"].vectors[row[0]], atol=1e-6)
    np.testing.assert_array_equal(codes[0], snap.collections["text"].codes[row[0]])
    img_vec, img_codes = searcher.embed_images([ds.records[5].image])
    np.testing.assert_allclose(img_vec[0], snap.collections["image"].vectors[5], atol=1e-5)
    np.testing.assert_array_equal(img_codes[0], snap.collections["image"].codes[5])
    top = searcher.image_to_image(ds.records[5].image, k=1)[0]
    assert top.id == ds.records[5].id and top.score == pytest.approx(1.0, abs=1e-5)


def test_cli_build_search_add_remove(
    emoji: dict[str, Path], tmp_path: Path, one_blas_thread
) -> None:
    ix, cache = tmp_path / "ix", str(emoji["cache"])
    result = runner.invoke(
        app,
        [
            "index",
            "build",
            str(emoji["run"]),
            "--data",
            str(emoji["data"]),
            "--out",
            str(ix),
            "--bits",
            "32",
            "--kind",
            "flat",
            "--cache-dir",
            cache,
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "31 items" in result.output and "32-bit codes" in result.output
    result = runner.invoke(app, ["search", str(ix), "smiling face", "--k", "3", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["score"] >= hits[1]["score"] >= hits[
        2
    ]["score"]
    api = Searcher(ix, device="cpu").text_to_image("smiling face", k=3)
    assert [h["id"] for h in hits] == [r.id for r in api]
    image = (
        emoji["data"]
        / json.loads((emoji["data"] / "data.jsonl").read_text().splitlines()[2])["image"]
    )
    page = tmp_path / "page.html"
    result = runner.invoke(
        app, ["search", str(ix), "--image", str(image), "--k", "2", "--html", str(page), "--json"]
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert hits[0]["image"] == str(image.resolve()) and hits[0]["score"] == pytest.approx(
        1.0, abs=1e-5
    )
    assert "data:image/png;base64," in page.read_text()
    result = runner.invoke(
        app,
        [
            "search",
            str(ix),
            "--image",
            str(image),
            "--to",
            "text",
            "--mode",
            "two-stage",
            "--k",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert all(h["modality"] == "text" and h["caption"] for h in json.loads(result.stdout))
    # grow and shrink
    result = runner.invoke(
        app,
        [
            "index",
            "add",
            str(ix),
            "--data",
            str(emoji["more"]),
            "--cache-dir",
            cache,
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    n_more = len((emoji["more"] / "data.jsonl").read_text().splitlines())
    assert f"{31 + n_more} items" in result.output
    result = runner.invoke(
        app, ["index", "add", str(ix), "--data", str(emoji["more"]), "--cache-dir", cache]
    )
    assert result.exit_code == 2 and "already in the index" in result.output
    new_id = json.loads((emoji["more"] / "data.jsonl").read_text().splitlines()[0])["image"]
    result = runner.invoke(
        app, ["search", str(ix), "--image", str(emoji["more"] / new_id), "--k", "1", "--json"]
    )
    assert json.loads(result.stdout)[0]["id"] == new_id  # added items are searchable
    result = runner.invoke(app, ["index", "remove", str(ix), new_id])
    assert result.exit_code == 0 and f"{30 + n_more} items" in result.output
    result = runner.invoke(app, ["index", "remove", str(ix), "no/such.png"])
    assert result.exit_code == 2 and "not in the index" in result.output
    result = runner.invoke(app, ["index", "info", str(ix), "--json"])
    assert json.loads(result.stdout)["version"] == 3
    # the run directory path of `search` still works; a folder that is neither is named
    result = runner.invoke(
        app, ["search", str(emoji["run"]), "face", "--k", "2", "--json", "--cache-dir", cache]
    )
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 2
    result = runner.invoke(app, ["search", str(tmp_path), "face"])
    assert result.exit_code == 2 and "neither an index" in result.output


def test_hash_head_codes(emoji: dict[str, Path], tmp_path: Path, one_blas_thread) -> None:
    run_dir = tmp_path / "multitask"
    train(
        emoji["data"], run_dir, "multitask", text_encoder="tfidf", split="random:0.6,0.2,0.2",
        method_options={"embed_dim": 32, "bits": 16}, cache_dir=emoji["cache"],
        train_options={"device": "cpu", "progress": False, "epochs": 2},
    )  # fmt: skip
    exported = export_run(
        run_dir, emoji["data"], cache_dir=emoji["cache"], device="cpu", progress=False
    )
    assert exported.codes.source == "head" and exported.items.bits == 16
    run = LoadedRun.open(run_dir, "cpu")
    import torch

    from xmodal.datasets import load_dataset

    encoded = run.encode(load_dataset(emoji["data"]), emoji["cache"], progress=False)
    with torch.inference_mode():
        run.method.eval()
        want = run.method.hash_image(torch.from_numpy(np.array(encoded.image, dtype=np.float32)))
    np.testing.assert_array_equal(exported.items.image_codes, pack_codes(want.numpy()))
    # another length: an ITQ rotation fitted on the run's training split instead
    other = export_run(
        run_dir, emoji["data"], bits=32, cache_dir=emoji["cache"], device="cpu", progress=False
    )
    assert other.codes.source == "itq" and other.codes.fit_on == "run training split"
    with pytest.raises(ValueError, match="hash head makes 16-bit codes"):
        export_run(
            run_dir, emoji["data"], bits=32, codes="head", cache_dir=emoji["cache"], progress=False
        )
    exported.save(tmp_path / "export")
    np.testing.assert_array_equal(
        np.load(tmp_path / "export" / "text_codes.npy"), exported.items.text_codes
    )
    # an index of head codes: text queries get their codes from the head too
    build_index(
        run_dir,
        emoji["data"],
        tmp_path / "ix",
        cache_dir=emoji["cache"],
        device="cpu",
        progress=False,
    )
    # the fitted tf-idf vocabulary travels with the index
    assert (tmp_path / "ix" / "versions" / "v000001" / "model" / "text_encoder.state").is_file()
    searcher = Searcher(tmp_path / "ix", device="cpu")
    results = searcher.text_to_image("cat face", k=3, mode="hamming")
    assert len(results) == 3 and all(r.distance is not None for r in results)
    with pytest.raises(ValueError, match="hash head"):
        searcher.search(
            "image", vectors=searcher.snapshot.collections["text"].vectors[:1], mode="hamming"
        )

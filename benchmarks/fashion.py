"""Real-photo mAP on ``fashion`` and transfer flickr8k -> fashion (docs/benchmarks.md).

Three steps (the training steps need no encoder, only the ``.npz``)::

    python benchmarks/fashion.py encode                     # features from the cache -> fashion-features.npz
    python benchmarks/fashion.py map --methods cca,infonce --seeds 5 --json docs/results/fashion-a.json
    python benchmarks/fashion.py transfer --seeds 3 --json docs/results/transfer-a.json
    python benchmarks/fashion.py map --merge docs/results/fashion-*.json   # re-render the doc only

``encode`` reads ``../shared/data/fashion`` (and ``flickr8k``, the transfer source) through
xmodal's feature cache with the default encoders (efficientnet-lite0, minilm); it waits for
entries another process is encoding (``--wait``) instead of encoding them a second time.
``fashion`` gets a seeded 80/10/10 split (``random:0.8,0.1,0.1``, seed 0), written to
``docs/results/fashion-split.json`` (usable as ``xmodal train --split file:...``); ``flickr8k``
keeps its official 6,000 / 1,000 / 1,000 split.

``map``: every method trained on the fashion training pairs with ``labels`` = articleType ∪
subCategory (two labels per image, for the label-aware methods), the checkpoint selected on the
validation mAP (mean of i2t and t2i, relevance = shares a label); scored on test at
``articleType`` and at ``subCategory`` relevance, mAP@all and mAP@100, i2t / t2i / i2i / t2t, in
float (cosine) and Hamming space at 16 / 32 / 64 bits (the method's own hash head trained at each
length where it has one, else ITQ codes fitted on the training embeddings).

``transfer``: flickr8k pairs are the source, fashion the unpaired target (its training images
and texts, pairing thrown away); every row is selected on the flickr8k validation split and
scored on the fashion test pairs. Rows: source-only ``infonce`` and ``cca``, ``aeir`` (target
unpaired), ``selftrain(...)`` (pseudo-pairs mined in the target, see ``xmodal.methods.selftrain``),
zero-shot ConSE (``conse:efficientnet-lite0``: the image classifier's ImageNet labels embedded by
MiniLM, no training; its one setting, how many labels to combine, chosen on flickr8k validation)
and the oracle ``infonce`` trained and selected on fashion pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import (
    BITS,
    has_hash_head,
    itq_codes,
    map_scores,
    own_codes,
    parts,
    train_one,
)
from report import machine, mean_std, update_section

from xmodal.embedding import embed_features
from xmodal.encoders import get_image_encoder
from xmodal.encoders.conse import conse_embedding
from xmodal.evaluation import cross_modal_map, retrieval_recall
from xmodal.io import write_json_atomic
from xmodal.methods.selftrain import (
    calibrate_min_score,
    mutual_nearest_pairs,
    pseudo_pair_precision,
)
from xmodal.training.data import PairedFeatures, UnpairedFeatures

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "docs" / "results"
FEATURES = ROOT / "fashion-features.npz"
#: Relevance levels of the fashion benchmark: label column blocks ``labels0``, ``labels1``.
LEVELS = ("articleType", "subCategory")
KS = (None, 100)
MAP_METHODS = [
    "cca",
    "infonce",
    "vse",
    "cusa(infonce)",
    "cusa(vse)",
    "cusa(vse)+tuned",
    "multitask",
    "crcgs",
]
#: Transfer rows: (row name, method, method options, trained on "source", "target" or "none":
#: a zero-shot image encoder, named in place of the method, applied to the cached features).
TRANSFER_ROWS: dict[str, tuple[str, dict, str]] = {
    "source-only (infonce)": ("infonce", {}, "source"),
    "source-only (cca)": ("cca", {"ridge": 1.0, "power": 0.5}, "source"),
    "aeir": ("aeir", {}, "source"),
    "selftrain(infonce)": ("selftrain(infonce)", {}, "source"),
    "selftrain(infonce) top 50% (fixed)": (
        "selftrain(infonce)",
        {"top_fraction": 0.5, "min_score": None},
        "source",
    ),
    "zero-shot ConSE (no training)": ("conse:efficientnet-lite0", {}, "none"),
    "oracle (infonce on target pairs)": ("infonce", {}, "target"),
}
#: How many ImageNet labels ConSE combines: chosen from these on the flickr8k validation split.
CONSE_TOPS = (1, 3, 5, 10, 20, 50, 1000)
#: ``embed(features, "image" | "text")``: unit-length embeddings of cached features.
Embed = Callable[[np.ndarray, str], np.ndarray]


# --------------------------------------------------------------------------------------------
# step 1: encode (through the shared feature cache)
# --------------------------------------------------------------------------------------------
def _wait_for_cache(ds: Any, cache_dir: Path | None, poll: float) -> None:
    """Block until both default-encoder entries of ``ds`` are complete in the cache."""
    from xmodal.encoders import get_image_encoder, get_text_encoder
    from xmodal.features import FeatureCache, default_cache_dir

    cache = FeatureCache(cache_dir or default_cache_dir())
    keys = [
        (get_image_encoder("efficientnet-lite0").key, "image"),
        (get_text_encoder("minilm").key, "text"),
    ]
    fp = ds.fingerprint()
    while any(cache.manifest(ds, key, modality, fp) is None for key, modality in keys):
        print(
            f"waiting for the cache entries of {ds.name} ({time.strftime('%H:%M:%S')})", flush=True
        )
        time.sleep(poll)


def _committed_rows(
    ds: Any, encoder: Any, modality: str, rows: int, cache_dir: Path | None
) -> np.ndarray:
    """The first ``rows`` rows of ``ds``'s cache entry: from the complete entry, or from the
    rows an encode still in progress has already committed (the same numbers it will keep)."""
    from xmodal.features import FeatureCache, default_cache_dir
    from xmodal.features.resumable import partial_paths

    cache = FeatureCache(cache_dir or default_cache_dir())
    full = cache.get(ds, encoder.key, modality)
    if full is not None:
        return np.asarray(full[:rows], dtype=np.float32)
    partial, progress = partial_paths(cache.path(ds, encoder.key, modality))
    done = json.loads(progress.read_text())["rows_done"] if progress.is_file() else 0
    if done < rows:
        raise SystemExit(f"{ds.name} {modality}: {done} rows committed in the cache, {rows} needed")
    return np.asarray(np.load(partial, mmap_mode="r")[:rows], dtype=np.float32)


def _features(
    ds: Any, first: int | None, committed: bool, cache_dir: Path | None
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """``(dataset, image, text, text_to_image)``, of the first ``first`` records when given."""
    from xmodal.encoders import get_image_encoder, get_text_encoder
    from xmodal.pipeline import encode_dataset

    if not first:
        enc = encode_dataset(ds, cache_dir=cache_dir)
        return ds, np.asarray(enc.image), np.asarray(enc.text), enc.text_to_image
    _, owner = ds.captions()
    n_text = int((owner < first).sum())  # captions follow record order
    if committed:
        image = _committed_rows(
            ds, get_image_encoder("efficientnet-lite0"), "image", first, cache_dir
        )
        text = _committed_rows(ds, get_text_encoder("minilm"), "text", n_text, cache_dir)
    else:
        enc = encode_dataset(ds, cache_dir=cache_dir)
        image, text = np.asarray(enc.image[:first]), np.asarray(enc.text[:n_text])
    return ds.subset(range(first), name=f"{ds.name}-first{first}"), image, text, owner[:n_text]


def encode(
    out: Path,
    cache_dir: Path | None,
    limit: int | None,
    first: dict[str, int],
    committed: bool,
    wait: float | None,
    split_out: Path,
) -> None:
    """Features, splits and label blocks of ``fashion`` and ``flickr8k`` in one ``.npz``.

    ``limit``: encode the first N records as a data set of their own (a small slice for tests).
    ``first``: per set, the first N records of the full set's cache entries (``committed``: also
    from an encode still in progress, using only rows it has committed).
    """
    from xmodal.datasets import load_dataset
    from xmodal.datasets.split_rules import parse_split

    arrays: dict[str, np.ndarray] = {}
    for name in ("fashion", "flickr8k"):
        ds = load_dataset(DATA / name, check_images=False)
        if limit:
            ds = ds.subset(range(min(limit, len(ds))), name=f"{name}-{limit}")
        if wait:
            _wait_for_cache(ds, cache_dir, wait)
        ds, image, text, text_to_image = _features(ds, first.get(name), committed, cache_dir)
        split = parse_split("auto", ds, seed=0)  # fashion: random 0.8/0.1/0.1; flickr8k: official
        if name == "fashion":
            split_out.parent.mkdir(parents=True, exist_ok=True)
            split.to_json(split_out)
        position = {rid: i for i, rid in enumerate(ds.ids)}
        part = np.full(len(ds), -1, dtype=np.int8)
        for code, ids in enumerate((split.train, split.val, split.test)):
            part[[position[i] for i in ids]] = code
        arrays[f"{name}/image"] = image.astype(np.float32)
        arrays[f"{name}/text"] = text.astype(np.float32)
        arrays[f"{name}/text_to_image"] = text_to_image
        arrays[f"{name}/part"] = part
        for level, field in enumerate(LEVELS if name == "fashion" else (None, None)):
            lab = ds.label_matrix(field=field) if field else np.zeros((len(ds), 1), dtype=bool)
            arrays[f"{name}/labels{level}"] = lab
        print(f"{ds.name}: {len(ds)} records, split {split.sizes}", flush=True)
    np.savez(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) and {split_out}")


def _first(spec: str) -> dict[str, int]:
    """``"fashion:3072,flickr8k:1024"`` -> ``{"fashion": 3072, "flickr8k": 1024}``."""
    out = {}
    for item in filter(None, spec.split(",")):
        name, _, n = item.partition(":")
        if name not in ("fashion", "flickr8k") or not n.isdigit():
            raise SystemExit(f"--first: expected NAME:N items (fashion, flickr8k), got {item!r}")
        out[name] = int(n)
    return out


# --------------------------------------------------------------------------------------------
# step 2: mAP on fashion
# --------------------------------------------------------------------------------------------
def _levels(z: Any) -> dict[str, slice]:
    n0 = z["fashion/labels0"].shape[1]
    return {LEVELS[0]: slice(0, n0), LEVELS[1]: slice(n0, None)}


def run_map(
    features: Path, methods: list[str], seeds: range, device: str, out_json: Path, train: dict
) -> dict:
    """Every method x seed on fashion; the JSON is rewritten after every run."""
    z = np.load(features)
    data = parts(z, "fashion")
    levels = _levels(z)
    results: dict[str, Any] = {
        "kind": "fashion-map",
        "machine": machine(),
        "device": device,
        "train": train,
        "sizes": {k: v.n_images for k, v in data.items()},
        "records": len(z["fashion/part"]),
        "methods": {},
    }
    for seed in seeds:  # seed-major: a run cut short leaves every method with as many seeds
        for method in methods:
            rows: dict[str, list[float]] = results["methods"].setdefault(method, {})
            start = time.perf_counter()
            model, spe = train_one(method, data, seed, device, {}, **train)
            codes = None
            if has_hash_head(method):
                codes = own_codes(method, data, seed, device, {}, **train)
            codes = codes or itq_codes(model, data, device)
            for k, v in map_scores(model, data["test"], levels, device, codes, KS).items():
                rows.setdefault(k, []).append(v)
            rows.setdefault("sec_per_epoch", []).append(spe)
            rows.setdefault("seconds", []).append(time.perf_counter() - start)
            print(
                f"{method} seed {seed}: articleType map_i2t {rows['articleType/map_i2t'][-1]:.3f} "
                f"t2i {rows['articleType/map_t2i'][-1]:.3f} ({rows['seconds'][-1]:.0f} s)",
                flush=True,
            )
            write_json_atomic(out_json, results)
    return results


# --------------------------------------------------------------------------------------------
# step 3: transfer flickr8k -> fashion
# --------------------------------------------------------------------------------------------
def _no_labels(split: dict[str, PairedFeatures]) -> dict[str, PairedFeatures]:
    return {k: PairedFeatures(v.image, v.text, v.text_to_image) for k, v in split.items()}


#: Fractions of the mined pairs whose precision is reported (on the source validation split,
#: and on the target as a diagnostic after training).
FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
#: ``selftrain`` keeps a target pseudo-pair when its CSLS confidence reaches the value above
#: which pairs mined on the source validation split (with the source-only model) are right at
#: least this often (:func:`xmodal.methods.selftrain.calibrate_min_score`).
MIN_PRECISION = 0.5


def model_embed(model: Any, device: str) -> Embed:
    """A trained model's embeddings of cached features."""
    return lambda features, modality: embed_features(model, features, modality, device=device)


def conse_embed(name: str, val: PairedFeatures) -> tuple[Embed, int, dict[int, float]]:
    """Zero-shot ConSE over cached classifier features: ``(embed, top, val rsum per top)``,
    ``top`` chosen from :data:`CONSE_TOPS` on the source validation pairs ``val``."""
    encoder = get_image_encoder(name, device="cpu")

    def embedder(top: int) -> Embed:
        def embed(features: np.ndarray, modality: str) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
            if modality == "text":  # the text tower is the features' own encoder
                return torch.nn.functional.normalize(x, dim=1).numpy()
            probabilities = encoder.classifier.class_probabilities(x).float()
            return conse_embedding(probabilities, encoder.class_embeddings, top).numpy()

        return embed

    on_val = {}
    for top in CONSE_TOPS:
        embed = embedder(top)
        sim = embed(val.image, "image") @ embed(val.text, "text").T
        on_val[top] = retrieval_recall(sim, val.text_to_image)["rsum"]
    best = max(on_val, key=lambda t: on_val[t])
    return embedder(best), best, on_val


def mined_pairs(embed: Embed, split: PairedFeatures) -> Any:
    """CSLS mutual-nearest-neighbour pairs of ``split``'s images and texts taken apart."""
    return mutual_nearest_pairs(embed(split.image, "image"), embed(split.text, "text"))


def pair_diagnostics(pairs: Any, split: PairedFeatures, prefix: str) -> dict[str, float]:
    """Precision of the mined pairs at :data:`FRACTIONS` (same item), the share that share a
    label (when the split has labels) and their number."""
    out = {f"{prefix}_pairs": float(len(pairs))}
    for f, p in pseudo_pair_precision(pairs, split.text_to_image, FRACTIONS).items():
        out[f"{prefix}_pair_precision@{f}"] = p
    if split.labels is not None and len(pairs):
        li = split.labels[pairs.image.numpy()]
        lt = split.labels[split.text_to_image[pairs.text.numpy()]]
        out[f"{prefix}_pair_label_agreement"] = float((li & lt).any(axis=1).mean())
    return out


def transfer_scores(
    embed: Embed, target: dict[str, PairedFeatures], n_article: int, kept: Any = None
) -> dict[str, float]:
    """rsum (and R@K) and articleType mAP@all in four directions on the target test pairs, and
    diagnostics scored with the hidden target training pairs (nothing is chosen on them): how
    right the mutual-nearest-neighbour pairs of the target are in this row's space, and for
    ``selftrain`` how right the pairs it kept (``kept``) were."""
    test = target["test"]
    img, txt = embed(test.image, "image"), embed(test.text, "text")
    out = dict(retrieval_recall(img @ txt.T, test.text_to_image))
    li = test.labels[:, :n_article]
    out.update(cross_modal_map(img, txt, li, li[test.text_to_image]))
    train = target["train"]
    out.update(pair_diagnostics(mined_pairs(embed, train), train, "target"))
    if kept is not None:
        out.update(pair_diagnostics(kept, train, "kept"))
    return out


def run_transfer(
    features: Path, rows: list[str], seeds: range, device: str, out_json: Path, train: dict
) -> dict:
    """Source flickr8k pairs, target fashion (unpaired in training); scored on fashion test.

    Per seed the source-only row runs first: ``selftrain``'s ``min_score`` is calibrated on the
    pairs mined with that model on the source validation split."""
    z = np.load(features)
    source = _no_labels(parts(z, "flickr8k"))
    target = parts(z, "fashion")
    target_unpaired = UnpairedFeatures(target["train"].image, target["train"].text)
    n_article = z["fashion/labels0"].shape[1]
    results: dict[str, Any] = {
        "kind": "transfer",
        "machine": machine(),
        "device": device,
        "train": train,
        "sizes": {
            name: {k: v.n_images for k, v in split.items()}
            for name, split in (("flickr8k", source), ("fashion", target))
        },
        "rows": {},
    }
    first = "source-only (infonce)"
    if first in rows or any(TRANSFER_ROWS[r][0].startswith("selftrain(") for r in rows):
        rows = [first, *(r for r in rows if r != first)]  # selftrain's threshold comes from it
    for seed in seeds:
        chosen: dict[str, float] = {}
        for row in rows:
            method, options, trained_on = TRANSFER_ROWS[row]
            scores = results["rows"].setdefault(row, {})
            start = time.perf_counter()
            model = None
            if trained_on == "none":
                embed, top, on_val = conse_embed(method, source["val"])
                scores.setdefault("top", []).append(top)
                for t, rsum in on_val.items():
                    scores.setdefault(f"source_val_rsum@top{t}", []).append(rsum)
            elif trained_on == "target":
                model, _ = train_one(method, _no_labels(target), seed, device, options, **train)
            elif row == first:
                model, _ = train_one(method, source, seed, device, options, **train)
                pairs = mined_pairs(model_embed(model, device), source["val"])
                chosen["min_score"] = calibrate_min_score(
                    pairs, source["val"].text_to_image, MIN_PRECISION
                )
                for k, v in pair_diagnostics(pairs, source["val"], "source_val").items():
                    scores.setdefault(k, []).append(v)
            else:
                if method.startswith("selftrain("):
                    options = {"top_fraction": 1.0, **chosen, **options}
                    if options["min_score"] is not None:
                        scores.setdefault("min_score", []).append(options["min_score"])
                args = (method, source, seed, device, options, target_unpaired)
                model, _ = train_one(*args, **train)
            if model is not None:
                embed = model_embed(model, device)
            kept = getattr(model, "pseudo_pairs", None)  # selftrain: the pairs it trained on
            for k, v in transfer_scores(embed, target, n_article, kept).items():
                scores.setdefault(k, []).append(v)
            scores.setdefault("seconds", []).append(time.perf_counter() - start)
            print(
                f"{row} seed {seed}: rsum {scores['rsum'][-1]:.1f}, articleType map_i2t "
                f"{scores['map_i2t'][-1]:.3f} ({scores['seconds'][-1]:.0f} s)",
                flush=True,
            )
            write_json_atomic(out_json, results)
    return results


# --------------------------------------------------------------------------------------------
# merging and the doc
# --------------------------------------------------------------------------------------------
def merge(results: list[dict]) -> dict:
    """Combine result JSONs of one kind: a method (row) in several has its per-seed lists
    concatenated. Seed counts may differ between methods; the table states each one."""
    kinds = {r["kind"] for r in results}
    if len(kinds) != 1:
        raise SystemExit(f"cannot merge results of different kinds: {sorted(kinds)}")
    key = "methods" if kinds == {"fashion-map"} else "rows"
    merged: dict[str, Any] = {**results[0], key: {}}
    for part in results:
        for name, values in part[key].items():
            into = merged[key].setdefault(name, {})
            for k, v in values.items():
                into.setdefault(k, []).extend(v)
    return merged


#: Records of the full sets (a run on the first N of them says so).
FASHION_SIZE, FLICKR8K_SIZE = 9583, 8000


def _which(n: int, total: int, what: str) -> str:
    return (
        f"the {total:,} {what}"
        if n == total
        else f"the first {n:,} (by file name) of the {total:,} {what}"
    )


def _photos(n: int) -> str:
    """``all 9,583 photos`` or ``first 2,048 photos``: which fashion set a section measured."""
    return f"all {n:,} photos" if n == FASHION_SIZE else f"first {n:,} photos"


def _n(values: dict[str, list[float]]) -> int:
    return len(values["seconds"])


def _split_file(records: int) -> str:
    """Where ``encode --split-out`` was pointed for this many records: the full set's split
    beside the earlier 2,048-photo one (``fashion-split.json``)."""
    return "fashion-split-full.json" if records == FASHION_SIZE else "fashion-split.json"


def map_markdown(results: dict, command: str) -> str:
    train = results["train"]
    m = results["methods"]
    lines = [
        f"## Real-photo mAP: `fashion`, {_photos(results['records'])} "
        "(`benchmarks/fashion.py map`)",
        "",
        f"Command: `{command}`. Machine: {results['machine']}; training on `{results['device']}`. "
        f"Seeded 80/10/10 split of {_which(results['records'], FASHION_SIZE, 'product photos')} ({results['sizes']['train']:,} / "
        f"{results['sizes']['val']:,} / {results['sizes']['test']:,} images, one caption each: "
        f"the product name), stored in `docs/results/{_split_file(results['records'])}`. "
        "Default encoders "
        "(efficientnet-lite0 1280-d, minilm 384-d), the same frozen features for every row. "
        "Training labels: articleType ∪ subCategory (two per image); checkpoint selected on "
        "validation mAP (mean of i2t and t2i, relevance = shares a label); "
        f"{train.get('epochs', 30)} epochs at most, early stop after {train.get('patience')} "
        "epochs without a better validation score. Figures on test, mean ± std over the seeds "
        "in column *n*. Hamming: the method's own hash head trained at each length where it has "
        f"one ({', '.join(f'`{n}`' for n in m if has_hash_head(n)) or 'none here'}), else ITQ "
        "codes fitted on the training embeddings.",
    ]
    directions = ("i2t", "t2i", "i2i", "t2t")
    for level in LEVELS:
        for k in KS:
            at = "" if k is None else f"@{k}"
            lines += [
                "",
                f"### fashion mAP{at or '@all'}, {level} relevance (shares the {level})",
                "",
                "| method | n | i2t | t2i | i2i | t2t | i2t 16b | t2i 16b | i2t 32b | t2i 32b "
                "| i2t 64b | t2i 64b | i2i 64b | t2t 64b |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for name, r in m.items():
                keys = [f"{level}/map_{d}{at}" for d in directions]
                keys += [f"{level}/map_{d}{at}@{b}b" for b in BITS[:-1] for d in ("i2t", "t2i")]
                keys += [f"{level}/map_{d}{at}@{BITS[-1]}b" for d in directions]
                cells = [mean_std(r[key], 3) if key in r else "–" for key in keys]
                lines.append(f"| `{name}` | {_n(r)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| method | n | s/epoch | s per seed (all trainings) |",
        "|---|---|---|---|",
    ]
    for name, r in m.items():
        spe = "closed form" if not any(r["sec_per_epoch"]) else mean_std(r["sec_per_epoch"], 2)
        lines.append(f"| `{name}` | {_n(r)} | {spe} | {mean_std(r['seconds'], 0)} |")
    return "\n".join(lines)


def _row_order(name: str) -> int:
    """Table position of a transfer row: :data:`TRANSFER_ROWS` order, unknown names last."""
    names = list(TRANSFER_ROWS)
    return names.index(name) if name in names else len(names)


def transfer_markdown(results: dict, command: str) -> str:
    train, sizes = results["train"], results["sizes"]
    lines = [
        "## Transfer between real domains: flickr8k -> fashion, "
        f"{_photos(sum(sizes['fashion'].values()))} (`benchmarks/fashion.py transfer`)",
        "",
        f"Command: `{command}`. Machine: {results['machine']}; training on `{results['device']}`. "
        f"Source: {_which(sum(sizes['flickr8k'].values()), FLICKR8K_SIZE, 'flickr8k photos')}, "
        f"official split ({sizes['flickr8k']['train']:,} training images with 5 captions each, "
        f"{sizes['flickr8k']['val']:,} validation). Target: "
        f"{_which(sum(sizes['fashion'].values()), FASHION_SIZE, 'fashion photos')}, "
        "the seeded 80/10/10 split of the fashion section: its "
        f"{sizes['fashion']['train']:,} training images and product names with their pairing "
        "thrown away (`UnpairedFeatures`). Every row except the oracle is selected on the "
        "flickr8k validation split (no target pair is seen before scoring); the oracle is "
        "`infonce` trained and selected on fashion pairs. Scored on the fashion test split "
        f"({sizes['fashion']['test']:,} images, one caption each). "
        f"{train.get('epochs', 30)} epochs at most, early "
        f"stop after {train.get('patience')} without a better validation score. Mean ± std over "
        "the seeds in column *n*; mAP at articleType relevance.",
        "",
        "| row | n | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 | rsum | mAP i2t | mAP t2i | mAP i2i | mAP t2t |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = sorted(results["rows"].items(), key=lambda item: _row_order(item[0]))
    for name, r in rows:
        cells = [
            mean_std(r[k])
            for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
        ]
        cells += [mean_std(r[f"map_{d}"], 3) for d in ("i2t", "t2i", "i2i", "t2t")]
        lines.append(f"| {name} | {_n(r)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Diagnostics, scored with the hidden target training pairs after training (nothing is "
        "chosen on them): the CSLS mutual-nearest-neighbour pairs between the target training "
        "images and texts in each row's space — how many, how many are the true pair among the "
        "10% / 50% / all most confident, how many share the articleType — and for "
        "`selftrain` the pairs it kept in its last round, with the confidence threshold "
        f"calibrated on flickr8k validation (precision ≥ {MIN_PRECISION} there).",
        "",
        "| row | mutual pairs | right @10% | @50% | @all | same articleType | threshold | kept pairs | kept right | kept same articleType |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    source_val = results["rows"].get("source-only (infonce)", {})
    for name, r in rows:
        cells = [mean_std(r["target_pairs"], 0)]
        cells += [mean_std(r[f"target_pair_precision@{f}"], 3) for f in (0.1, 0.5, 1.0)]
        cells.append(mean_std(r.get("target_pair_label_agreement", [float("nan")]), 3))
        threshold = mean_std(r["min_score"], 3) if "min_score" in r else "–"
        keys = ("kept_pairs", "kept_pair_precision@1.0", "kept_pair_label_agreement")
        cells += [
            threshold,
            *(mean_std(r[k], 0 if k == "kept_pairs" else 3) if k in r else "–" for k in keys),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if source_val:
        lines += [
            "",
            "On flickr8k validation (source-only space, where the pairs are known) the mined "
            f"pairs number {mean_std(source_val['source_val_pairs'], 0)}; right among the "
            "10% / 50% / all most confident: "
            + " / ".join(
                mean_std(source_val[f"source_val_pair_precision@{f}"], 3) for f in (0.1, 0.5, 1.0)
            )
            + ".",
        ]
    for name, r in rows:
        if "top" in r:
            on_val = ", ".join(
                f"{t}: {mean_std(r[f'source_val_rsum@top{t}'])}"
                for t in CONSE_TOPS
                if f"source_val_rsum@top{t}" in r
            )
            lines += [
                "",
                f"{name}: labels combined per image chosen on flickr8k validation rsum ({on_val}); "
                f"chosen: {', '.join(str(t) for t in sorted(set(r['top'])))}. It trains nothing "
                "and has no seed: its rows repeat.",
            ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="step", required=True)
    e = sub.add_parser("encode")
    e.add_argument("--out", type=Path, default=FEATURES)
    e.add_argument("--cache-dir", type=Path, default=None)
    e.add_argument("--limit", type=int, default=None, help="first N records of each set (tests)")
    e.add_argument("--first", type=_first, default={}, help="e.g. fashion:3072,flickr8k:1024")
    e.add_argument(
        "--committed",
        action="store_true",
        help="with --first: read rows an encode still in progress has committed",
    )
    e.add_argument("--split-out", type=Path, default=RESULTS / "fashion-split.json")
    e.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="poll the cache every SECONDS until another process has finished encoding",
    )
    for step in ("map", "transfer"):
        t = sub.add_parser(step)
        t.add_argument("--features", type=Path, default=FEATURES)
        names = MAP_METHODS if step == "map" else list(TRANSFER_ROWS)
        t.add_argument("--methods" if step == "map" else "--rows", default=",".join(names))
        t.add_argument("--seeds", type=int, default=3)
        t.add_argument("--first-seed", type=int, default=0)
        t.add_argument("--epochs", type=int, default=30)
        t.add_argument("--patience", type=int, default=5)
        t.add_argument("--device", default="cpu")
        t.add_argument("--json", type=Path, default=RESULTS / f"{step}.json")
        t.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
        t.add_argument("--merge", type=Path, nargs="+", help="only re-render the doc from JSONs")
        t.add_argument("--command", help="the command(s) to name in the doc's header")
        t.add_argument(
            "--section",
            default=f"fashion-{step}",
            help="docs/benchmarks.md section to write (another name keeps the default's rows)",
        )
    args = parser.parse_args()
    if args.step == "encode":
        encode(
            args.out,
            args.cache_dir,
            args.limit,
            args.first,
            args.committed,
            args.wait,
            args.split_out,
        )
        return
    train = {"epochs": args.epochs, "patience": args.patience}
    if args.step == "map":
        train["select_metric"] = "map"
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    names = [n for n in (args.methods if args.step == "map" else args.rows).split(",") if n]
    if args.merge:
        results = merge([json.loads(p.read_text()) for p in args.merge])
    elif args.step == "map":
        results = run_map(args.features, names, seeds, args.device, args.json, train)
    else:
        results = run_transfer(args.features, names, seeds, args.device, args.json, train)
    command = args.command or " ".join(["python", "benchmarks/fashion.py", *sys.argv[1:]])
    if not args.no_doc:
        render = map_markdown if args.step == "map" else transfer_markdown
        print("updated", update_section(args.section, render(results, command)))


if __name__ == "__main__":
    main()

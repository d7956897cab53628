"""Retrieval quality of every method on real data, mean ± std over seeds (docs/benchmarks.md).

Two steps, so the training step can run where the encoders are not installed (a GPU box)::

    python benchmarks/quality.py encode --out bench-features.npz      # frozen features, once
    python benchmarks/quality.py train --features bench-features.npz  # every method x seed

``encode`` reads ``../shared/data/{flickr8k-1k,openmoji}`` through xmodal's feature cache with
the default encoders (efficientnet-lite0, minilm). ``train`` trains each method on the same
frozen features: flickr8k-1k with the fixed 700/100/200 split by sorted file name, openmoji with
a seeded 80/10/10 split (seed 0 for every run; the run seed changes initialisation and batch
order). Checkpoints are selected on validation; every figure is on test.

Metrics: flickr8k-1k R@1/5/10 both ways, rsum, and t2t mAP (captions of the same image are
relevant; i2i is undefined there: each image is its own class). openmoji: mAP@all i2t/t2i/i2i/t2t
at group and at subgroup relevance, in float (cosine) and Hamming space at 16/32/64 bits (the
method's own hash head when it has one, trained at each length; otherwise ITQ codes fitted on
the training embeddings).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, mean_std, update_section

from xmodal.embedding import embed_features, embed_pairs, score_embeddings
from xmodal.evaluation import cross_modal_map, mean_average_precision, retrieval_recall
from xmodal.index.codes import fit_rotation
from xmodal.io import write_json_atomic
from xmodal.methods import build_method
from xmodal.training import PairedFeatures, TrainConfig, Trainer, seed_everything
from xmodal.training.data import UnpairedFeatures
from xmodal.training.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ISSUE2_METHODS = ["cca", "infonce", "vse"]
ALL_METHODS = [
    "cca",
    "infonce",
    "vse",
    "cusa(infonce)",
    "cusa(vse)",
    "cusa(vse)+tuned",
    "ensemble(cusa(vse))+tuned",
    "multitask",
    "crcgs",
]
#: Named variants: a registered method plus options. "+tuned" options are the preset
#: ``cusa-vse-tuned`` (src/xmodal/training/presets/cusa-vse-tuned.json), chosen on the
#: flickr8k-1k validation split (teacher temperature 0.1 sharpens the soft labels, which are
#: nearly uniform at the paper's 1.0 on these frozen features).
TUNED_CUSA = dict(get_preset("cusa-vse-tuned").method_options)
#: ``ensemble(...)`` rows: 8 members, chosen on flickr8k-1k validation (rsum 413.8 / 416.6 for
#: seeds 0 / 1 against 404.6 / 411.8 for one model; 16 members gave 421.2 at twice the cost).
#: ``cca+val``: the preset ``cca-flickr8k``, the best CCA settings on the Flickr8K val split with
#: all 6,000 training images (ridge 1, canonical correlations weighted by their square root;
#: until 2026-12-04 this row was ridge 3, the choice made with the first 1,712 images).
CCA_FLICKR8K = dict(get_preset("cca-flickr8k").method_options)
VARIANTS: dict[str, tuple[str, dict]] = {
    "cca+val": ("cca", CCA_FLICKR8K),
    "cusa(vse)+tuned": ("cusa(vse)", TUNED_CUSA),
    "ensemble(cusa(vse))+tuned": (
        "ensemble(cusa(vse))",
        {"members": 8, "base_options": TUNED_CUSA},
    ),
}
BITS = (16, 32, 64)
#: What ``encode`` writes unless ``--datasets`` says otherwise.
DEFAULT_SETS = ("flickr8k-1k", "openmoji")
#: Early-stopping patience (epochs without a better validation score). Most runs peak within
#: 2-5 epochs on these 700 / 1,971 training images, so 5 loses nothing and halves the cost.
PATIENCE = 5
DEFAULT_JSON = ROOT / "docs" / "quality.json"
FLICKR8K_JSON = ROOT / "docs" / "results" / "quality-flickr8k.json"
EXPLORE_JSON = ROOT / "docs" / "results" / "flickr8k-explore.json"


# --------------------------------------------------------------------------------------------
# step 1: encode
# --------------------------------------------------------------------------------------------
def benchmark_split(name: str, ds: Any) -> Any:
    """The fixed split of each benchmark set: ``flickr8k`` its official lists (the records'
    ``split`` field), ``flickr8k-1k`` 700/100/200 by sorted name, others seeded 80/10/10."""
    from xmodal.datasets import split_random, split_sorted
    from xmodal.datasets.split_rules import parse_split

    if name == "flickr8k":
        return parse_split("karpathy", ds)
    if name == "flickr8k-1k":
        return split_sorted(ds, (700, 100, 200))
    return split_random(ds, (0.8, 0.1, 0.1), seed=0)


def encode(out: Path, cache_dir: Path | None, names: tuple[str, ...] = DEFAULT_SETS) -> None:
    """Encode the datasets ``names`` and save features, splits and labels in one ``.npz``."""
    from xmodal.datasets import load_dataset
    from xmodal.pipeline import encode_dataset

    arrays: dict[str, np.ndarray] = {}
    for name in names:
        ds = load_dataset(DATA / name)
        enc = encode_dataset(ds, cache_dir=cache_dir)
        split = benchmark_split(name, ds)
        position = {rid: i for i, rid in enumerate(ds.ids)}
        part = np.full(len(ds), -1, dtype=np.int8)
        for code, ids in enumerate((split.train, split.val, split.test)):
            part[[position[i] for i in ids]] = code
        arrays[f"{name}/image"] = np.asarray(enc.image, dtype=np.float32)
        arrays[f"{name}/text"] = np.asarray(enc.text, dtype=np.float32)
        arrays[f"{name}/text_to_image"] = enc.text_to_image
        arrays[f"{name}/part"] = part
        for level in (0, 1):
            names = sorted({r.labels[level] for r in ds.records if len(r.labels) > level})
            col = {n: j for j, n in enumerate(names)}
            lab = np.zeros((len(ds), max(1, len(names))), dtype=bool)
            for i, r in enumerate(ds.records):
                if len(r.labels) > level:
                    lab[i, col[r.labels[level]]] = True
            arrays[f"{name}/labels{level}"] = lab
    np.savez(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")


# --------------------------------------------------------------------------------------------
# step 2: train and score
# --------------------------------------------------------------------------------------------
def parts(z: Any, name: str) -> dict[str, PairedFeatures]:
    image, text, t2i, part = (z[f"{name}/{k}"] for k in ("image", "text", "text_to_image", "part"))
    labels = np.concatenate([z[f"{name}/labels0"], z[f"{name}/labels1"]], axis=1)
    out = {}
    for code, split in enumerate(("train", "val", "test")):
        rows = np.flatnonzero(part == code)
        new = np.full(len(part), -1)
        new[rows] = np.arange(len(rows))
        keep = new[t2i] >= 0
        out[split] = PairedFeatures(
            image[rows], text[keep], new[t2i[keep]], labels[rows] if labels.any() else None
        )
    return out


def resolve_row(method: str) -> tuple[str, dict, dict]:
    """``(registered method, method options, trainer options)`` of a table row: a
    :data:`VARIANTS` name, ``preset:NAME`` (a preset of :mod:`xmodal.training.presets`), or a
    registered method with its defaults."""
    if method.startswith("preset:"):
        from xmodal.training.presets import get_preset

        p = get_preset(method.removeprefix("preset:"))
        return p.method, dict(p.method_options), dict(p.train_options)
    name, variant_options = VARIANTS.get(method, (method, {}))
    return name, variant_options, {}


def fit_one(
    method: str,
    data: dict[str, PairedFeatures],
    seed: int,
    device: str,
    options: dict,
    unpaired: UnpairedFeatures | None = None,
    train_options: dict | None = None,
) -> tuple[Any, Any]:
    """Train one row's method at ``seed``: the model and the trainer's ``TrainResult``."""
    name, variant_options, variant_training = resolve_row(method)
    d = data["train"]
    seed_everything(seed)  # initialisation depends on the seed too, not only batch order
    model = build_method(name, d.image.shape[1], d.text.shape[1], **{**variant_options, **options})
    trainer = {"patience": PATIENCE, **variant_training, **(train_options or {})}
    cfg = TrainConfig(seed=seed, device=device, progress=False, **trainer)
    result = Trainer(model, cfg).fit(d, data["val"], unpaired=unpaired)
    return model, result


def train_one(
    method: str,
    data: dict[str, PairedFeatures],
    seed: int,
    device: str,
    options: dict,
    unpaired: UnpairedFeatures | None = None,
    **train_options: Any,
) -> tuple[Any, float]:
    """Train ``method`` (a registered name or a :data:`VARIANTS` name) on ``data["train"]``,
    selected on ``data["val"]``; ``train_options`` override :class:`TrainConfig` fields."""
    model, result = fit_one(method, data, seed, device, options, unpaired, train_options)
    return model, result.seconds_per_epoch


def flickr_scores(model: Any, test: PairedFeatures, device: str) -> dict[str, float]:
    img = embed_features(model, test.image, "image", device=device)
    txt = embed_features(model, test.text, "text", device=device)
    scores = retrieval_recall(img @ txt.T, test.text_to_image)
    same = test.text_to_image[:, None] == test.text_to_image[None, :]
    tt = txt @ txt.T
    np.fill_diagonal(same, False)
    off = ~np.eye(len(txt), dtype=bool)
    scores["map_t2t"] = mean_average_precision(
        tt[off].reshape(len(txt), -1), same[off].reshape(len(txt), -1)
    )
    return scores


def moji_scores(
    model: Any, data: dict[str, PairedFeatures], n_groups: int, device: str, codes: dict | None
) -> dict[str, float]:
    levels = {"group": slice(0, n_groups), "subgroup": slice(n_groups, None)}
    return map_scores(model, data["test"], levels, device, codes)


def map_scores(
    model: Any,
    test: PairedFeatures,
    levels: dict[str, slice],
    device: str,
    codes: dict | None,
    ks: tuple[int | None, ...] = (None,),
) -> dict[str, float]:
    """mAP in four directions at each relevance level (a slice of the label columns), float and
    Hamming (``codes``: bits -> (image codes, text codes)), at each cut-off in ``ks`` (``None``:
    mAP@all). Keys: ``LEVEL/map_i2t[@K][@BITSb]``."""
    img = embed_features(model, test.image, "image", device=device)
    txt = embed_features(model, test.text, "text", device=device)
    out: dict[str, float] = {}
    for level, cols in levels.items():
        li = test.labels[:, cols]
        lt = li[test.text_to_image]
        for k in ks:
            at = "" if k is None else f"@{k}"
            for key, v in cross_modal_map(img, txt, li, lt, k=k).items():
                out[f"{level}/{key}{at}"] = v
            for bits, (ci, ct) in (codes or {}).items():
                for key, v in cross_modal_map(ci, ct, li, lt, k=k, hamming=True).items():
                    out[f"{level}/{key}{at}@{bits}b"] = v
    return out


def itq_codes(
    model: Any, data: dict[str, PairedFeatures], device: str
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    train, test = data["train"], data["test"]
    fit_on = np.concatenate(
        [
            embed_features(model, train.image, "image", device=device),
            embed_features(model, train.text, "text", device=device),
        ]
    )
    img = embed_features(model, test.image, "image", device=device)
    txt = embed_features(model, test.text, "text", device=device)
    out = {}
    for bits in BITS:
        rot = fit_rotation(fit_on, bits, kind="itq")
        out[bits] = (rot.encode(img), rot.encode(txt))
    return out


def own_codes(
    method: str, data: dict, seed: int, device: str, options: dict, **train_options: Any
) -> dict[int, tuple[np.ndarray, np.ndarray]] | None:
    import torch

    out = {}
    for bits in BITS:
        model, _ = train_one(method, data, seed, device, {**options, "bits": bits}, **train_options)
        test = data["test"]
        with torch.inference_mode():
            model.eval()
            ci = model.hash_image(torch.as_tensor(test.image, device=device))
            ct = model.hash_text(torch.as_tensor(test.text, device=device))
        if ci is None:
            return None
        out[bits] = (ci.cpu().numpy().astype(np.int8), ct.cpu().numpy().astype(np.int8))
    return out


def has_hash_head(method: str) -> bool:
    from xmodal.methods import get_method_class

    return "bits" in get_method_class(resolve_row(method)[0]).Config.__dataclass_fields__


def transfer(z: Any, seeds: range, device: str) -> dict[str, list[float]]:
    """Source flickr8k-1k pairs -> target openmoji (pairs thrown away); scored on openmoji test.

    Rows: source-only infonce, aeir (target images and texts unpaired, selected on the source's
    validation split: no target pair is used), and an oracle infonce trained on target pairs.
    """
    flickr, moji = parts(z, "flickr8k-1k"), parts(z, "openmoji")
    flickr = {k: PairedFeatures(v.image, v.text, v.text_to_image) for k, v in flickr.items()}
    target = UnpairedFeatures(moji["train"].image, moji["train"].text)
    rows: dict[str, list[float]] = {}
    for seed in seeds:
        runs = {
            "source-only (infonce)": train_one("infonce", flickr, seed, device, {}),
            "aeir": train_one("aeir", flickr, seed, device, {}, unpaired=target),
            "oracle (infonce on target pairs)": train_one("infonce", moji, seed, device, {}),
        }
        for name, (model, _) in runs.items():
            test = moji["test"]
            img = embed_features(model, test.image, "image", device=device)
            txt = embed_features(model, test.text, "text", device=device)
            rec = retrieval_recall(img @ txt.T, test.text_to_image)
            rows.setdefault(f"{name}/rsum", []).append(rec["rsum"])
            li = test.labels[:, : z["openmoji/labels0"].shape[1]]
            mp = cross_modal_map(img, txt, li, li[test.text_to_image])
            rows.setdefault(f"{name}/map_i2t", []).append(mp["map_i2t"])
            rows.setdefault(f"{name}/map_t2i", []).append(mp["map_t2i"])
        print(
            f"transfer seed {seed}: "
            + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rows.items() if k.endswith("rsum")),
            flush=True,
        )
    return rows


def run(
    features: Path,
    methods: list[str],
    seeds: range,
    device: str,
    out_json: Path,
    with_transfer: bool,
) -> dict:
    z = np.load(features)
    with_moji = "openmoji/image" in z  # encode --datasets flickr8k-1k leaves it out
    flickr = parts(z, "flickr8k-1k")
    moji = parts(z, "openmoji") if with_moji else {}
    n_groups = z["openmoji/labels0"].shape[1] if with_moji else 0
    results: dict[str, Any] = {
        "machine": machine(),
        "device": device,
        "seeds": len(seeds),
        "seed_list": list(seeds),
        "methods": {},
    }
    for method in methods:
        rows: dict[str, list[float]] = {}
        for seed in seeds:
            start = time.perf_counter()
            model, spe = train_one(method, flickr, seed, device, {})
            for k, v in flickr_scores(model, flickr["test"], device).items():
                rows.setdefault(f"flickr/{k}", []).append(v)
            rows.setdefault("flickr/sec_per_epoch", []).append(spe)
            if not with_moji:
                print(
                    f"{method} seed {seed}: flickr rsum {rows['flickr/rsum'][-1]:.1f}", flush=True
                )
                results["methods"][method] = rows
                write_json_atomic(out_json, results)
                continue
            model, spe = train_one(method, moji, seed, device, {})
            codes = own_codes(method, moji, seed, device, {}) if has_hash_head(method) else None
            codes = codes or itq_codes(model, moji, device)
            for k, v in moji_scores(model, moji, n_groups, device, codes).items():
                rows.setdefault(f"moji/{k}", []).append(v)
            rows.setdefault("moji/sec_per_epoch", []).append(spe)
            print(
                f"{method} seed {seed}: flickr rsum {rows['flickr/rsum'][-1]:.1f}, "
                f"openmoji group map_i2t {rows['moji/group/map_i2t'][-1]:.3f} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            results["methods"][method] = rows  # after every seed: a crash loses one seed at most
            write_json_atomic(out_json, results)
    if with_transfer:
        results["transfer"] = transfer(z, seeds, device)
        results["transfer_seeds"] = len(seeds)
        write_json_atomic(out_json, results)
    return results


def merge(parts_: list[dict], same_seeds: bool = True) -> dict:
    """Combine result JSONs: the same method (or the transfer rows) in several parts has its
    per-seed lists concatenated, so runs over disjoint seed ranges add up to one table."""
    results: dict[str, Any] = {**parts_[0], "methods": {}}
    transfer_rows: dict[str, list[float]] = {}
    for part in parts_:
        for method, rows in part["methods"].items():
            into = results["methods"].setdefault(method, {})
            for key, values in rows.items():
                into.setdefault(key, []).extend(values)
        for key, values in part.get("transfer", {}).items():
            transfer_rows.setdefault(key, []).extend(values)
    order = {name: i for i, name in enumerate(ALL_METHODS)}
    results["methods"] = dict(
        sorted(results["methods"].items(), key=lambda kv: order.get(kv[0], len(order)))
    )
    counts = {len(rows["flickr/rsum"]) for rows in results["methods"].values()}
    if len(counts) > 1 and same_seeds:
        raise SystemExit(f"methods have different numbers of seeds: {sorted(counts)}")
    results["seeds"] = max(counts) if counts else 0
    if transfer_rows:
        results["transfer"] = transfer_rows
        results["transfer_seeds"] = len(next(iter(transfer_rows.values())))
    return results


def _seconds(values: list[float]) -> str:
    return "closed form" if not any(values) else mean_std(values, 2)


def markdown(results: dict, command: str) -> str:
    m = results["methods"]
    lines = [
        "## Retrieval quality (`benchmarks/quality.py`)",
        "",
        f"Command: `{command}`. Machine: {results['machine']}; training on `{results['device']}`. "
        f"Mean ± std over {results['seeds']} seeds (30 epochs at most, early stop after {PATIENCE} epochs without a better validation score); default encoders (efficientnet-lite0 1280-d, "
        "minilm 384-d), the same frozen features for every row; checkpoint selected on validation, "
        "figures on test. s/epoch is the mean training time per epoch (without validation). "
        "Hamming columns: the method's own hash head trained at each length where it has one "
        f"({', '.join(f'`{n}`' for n in m if has_hash_head(n)) or 'none here'}), else ITQ "
        "codes fitted on the training embeddings.",
        "",
        "### flickr8k-1k (700 / 100 / 200 images by sorted file name, 5 captions each)",
        "",
        "| method | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 | rsum | t2t mAP | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in m.items():
        cells = [
            mean_std(r[f"flickr/{k}"])
            for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
        ]
        cells += [mean_std(r["flickr/map_t2t"], 3), _seconds(r["flickr/sec_per_epoch"])]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    for level in (
        ("group", "subgroup") if any("moji/sec_per_epoch" in r for r in m.values()) else ()
    ):
        lines += [
            "",
            f"### openmoji mAP@all, {level} relevance (shares a {level}), seeded 80/10/10 split",
            "",
            "| method | i2t | t2i | i2i | t2t | i2t 16b | t2i 16b | i2t 32b | t2i 32b | i2t 64b | t2i 64b | s/epoch |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in m.items():
            keys = [f"moji/{level}/map_{d}" for d in ("i2t", "t2i", "i2i", "t2t")]
            keys += [f"moji/{level}/map_{d}@{b}b" for b in BITS for d in ("i2t", "t2i")]
            cells = [mean_std(r[k], 3) if k in r else "–" for k in keys]
            lines.append(
                f"| `{name}` | " + " | ".join(cells) + f" | {_seconds(r['moji/sec_per_epoch'])} |"
            )
    if "transfer" in results:
        t = results["transfer"]
        lines += [
            "",
            "### Transfer to unpaired data: flickr8k-1k pairs -> openmoji (group relevance)",
            "",
            "Target training images and texts are used without their pairing; selection on the "
            "source validation split. Scored on the openmoji test pairs. "
            f"Mean ± std over {len(next(iter(t.values())))} seed(s).",
            "",
            "| row | rsum | mAP i2t | mAP t2i |",
            "|---|---|---|---|",
        ]
        for name in dict.fromkeys(k.rsplit("/", 1)[0] for k in t):
            lines.append(
                f"| {name} | {mean_std(t[name + '/rsum'])} | {mean_std(t[name + '/map_i2t'], 3)} | {mean_std(t[name + '/map_t2i'], 3)} |"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the Flickr8K protocol: official 6,000 / 1,000 / 1,000 split, features through the cache
# --------------------------------------------------------------------------------------------
#: Rows of the Flickr8K table by default: every method, then the presets chosen on its val split.
FLICKR8K_ROWS = [m for m in ALL_METHODS if m != "ensemble(cusa(vse))+tuned"]
RECALLS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
#: Query-bank inverse temperatures tried on val for each trained model's ``qb/`` figures (the
#: bank of ``cca-flickr8k-concat-qb``: 5,000 training images and captions, drawn as the trainer
#: draws them).
QB_BETAS = (3.0, 5.0, 8.0, 10.0, 13.0, 15.0, 20.0, 30.0, 50.0, 100.0)


def query_bank_scores(
    model: Any, data: dict[str, PairedFeatures], seed: int, device: str
) -> dict[str, float]:
    """Query-bank normalisation on top of a trained model, nothing retrained: the bank is the
    trainer's (a seeded sample of training images and captions), β is the best of
    :data:`QB_BETAS` on val, and the test recalls are ranked with that β."""
    config = TrainConfig(seed=seed, device=device, progress=False, query_bank_beta=1.0)
    bank = Trainer(model, config).query_bank(data["train"])
    assert bank is not None  # query_bank_beta > 0
    val = embed_pairs(model, data["val"], device)
    by_beta = {
        b: score_embeddings(val, with_map=False, query_bank=replace(bank, beta=b))["rsum"]
        for b in QB_BETAS
    }
    beta = max(by_beta, key=lambda b: by_beta[b])
    test = embed_pairs(model, data["test"], device)
    scores = score_embeddings(test, with_map=False, query_bank=replace(bank, beta=beta))
    return {"beta": beta, "val_rsum": by_beta[beta], **{k: scores[k] for k in (*RECALLS, "rsum")}}


def first_images(data: PairedFeatures, n: int) -> PairedFeatures:
    """The first ``n`` images of ``data`` (in their order: sorted ids) and their captions."""
    keep = data.text_to_image < n
    labels = None if data.labels is None else data.labels[:n]
    return PairedFeatures(data.image[:n], data.text[keep], data.text_to_image[keep], labels)


def flickr8k_parts(
    method_options: dict,
    cache_dir: Path | None,
    device: str,
    memo: dict,
    features: Path | None = None,
    train_images: int | None = None,
) -> dict[str, PairedFeatures]:
    """Train / val / test features of ``flickr8k`` (official split) for a row's towers: the
    default encoders, or the intermediate features a fine-tuned tower reads; from ``features``
    (an ``encode --datasets flickr8k`` file, default encoders only) when given. With
    ``train_images`` only the first that many training images (by sorted id) are trained on."""
    if features is not None:
        towers = {k: v for k, v in method_options.items() if k.endswith("_tower") and v != "mlp"}
        if towers:
            raise SystemExit(
                f"--features holds the default encoders' features; {towers} need the cache"
            )
        data = memo.setdefault("npz", parts(np.load(features), "flickr8k"))
    else:
        data = _flickr8k_cached(method_options, cache_dir, device, memo)
    if train_images is not None:
        data = {**data, "train": first_images(data["train"], train_images)}
    return data


def _flickr8k_cached(
    method_options: dict, cache_dir: Path | None, device: str, memo: dict
) -> dict[str, PairedFeatures]:
    from xmodal.datasets import load_dataset
    from xmodal.pipeline import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER, encoder_for_tower
    from xmodal.training.encoded import encode_dataset

    image_enc = encoder_for_tower(
        None, method_options.get("image_tower", "mlp"), DEFAULT_IMAGE_ENCODER, "image"
    )
    text_enc = encoder_for_tower(
        None, method_options.get("text_tower", "mlp"), DEFAULT_TEXT_ENCODER, "text"
    )
    key = (image_enc, text_enc)
    if key not in memo:
        ds = memo.get("dataset") or load_dataset(DATA / "flickr8k")
        memo["dataset"] = ds
        enc = encode_dataset(ds, image_enc, text_enc, cache_dir, device, progress=False)
        split = benchmark_split("flickr8k", ds)
        memo[key] = {name: enc.paired(getattr(split, name)) for name in ("train", "val", "test")}
    return memo[key]


def run_flickr8k(
    methods: list[str],
    seeds: range,
    device: str,
    out_json: Path,
    options: dict,
    train_options: dict,
    cache_dir: Path | None = None,
    features: Path | None = None,
    train_images: int | None = None,
) -> dict:
    """Every row on ``flickr8k``'s official split: test R@K, rsum and t2t mAP per seed, with the
    selected checkpoint's validation rsum and epoch. The JSON is rewritten after every seed."""
    results: dict[str, Any] = {
        "dataset": "flickr8k",
        "train_images": train_images,
        "machine": machine(),
        "device": device,
        "seed_list": list(seeds),
        "methods": {},
    }
    memo: dict = {}
    for method in methods:
        _, row_options, _ = resolve_row(method)
        data = flickr8k_parts(
            {**row_options, **options}, cache_dir, device, memo, features, train_images
        )
        rows: dict[str, list[float]] = {}
        for seed in seeds:
            start = time.perf_counter()
            model, fit = fit_one(method, data, seed, device, options, train_options=train_options)
            for k, v in flickr_scores(model, data["test"], device).items():
                rows.setdefault(f"flickr/{k}", []).append(v)
            rows.setdefault("flickr/sec_per_epoch", []).append(fit.seconds_per_epoch)
            rows.setdefault("val/rsum", []).append(fit.best["rsum"])
            rows.setdefault("val/best_epoch", []).append(fit.best_epoch)
            rows.setdefault("seconds", []).append(time.perf_counter() - start)
            for k, v in query_bank_scores(model, data, seed, device).items():
                rows.setdefault(f"qb/{k}", []).append(v)
            print(
                f"{method} seed {seed}: val rsum {fit.best['rsum']:.1f} (epoch {fit.best_epoch}), "
                f"test rsum {rows['flickr/rsum'][-1]:.1f}; with a query bank (beta "
                f"{rows['qb/beta'][-1]:g}) val {rows['qb/val_rsum'][-1]:.1f}, test "
                f"{rows['qb/rsum'][-1]:.1f} ({rows['seconds'][-1]:.0f} s)",
                flush=True,
            )
            results["methods"][method] = rows  # after every seed: a crash loses one seed at most
            write_json_atomic(out_json, results)
    return results


#: The exploration toward rsum 330 on flickr8k (``train --dataset flickr8k --explore``): one
#: seed each, scored on VAL only (the table above reports test for what was picked here).
#: (label, row, method options, trainer options).
EXPLORE: list[tuple[str, str, dict, dict]] = [
    ("cca (ridge 1.0, chosen on flickr8k-1k)", "cca", {}, {}),
    ("cca ridge 0.3", "cca", {"ridge": 0.3}, {}),
    ("cca ridge 0.1", "cca", {"ridge": 0.1}, {}),
    ("cca ridge 0.03", "cca", {"ridge": 0.03}, {}),
    ("cca ridge 0.1, power 2", "cca", {"ridge": 0.1, "power": 2.0}, {}),
    ("cca ridge 0.1, power 0.5", "cca", {"ridge": 0.1, "power": 0.5}, {}),
    ("cca ridge 0.1, 384-d", "cca", {"ridge": 0.1, "embed_dim": 384}, {}),
    ("cca ridge 3", "cca", {"ridge": 3.0}, {}),
    ("cca ridge 10", "cca", {"ridge": 10.0}, {}),
    ("cca ridge 30", "cca", {"ridge": 30.0}, {}),
    ("cca ridge 3, power 2", "cca", {"ridge": 3.0, "power": 2.0}, {}),
    ("cca ridge 3, power 0.5", "cca", {"ridge": 3.0, "power": 0.5}, {}),
    ("cca ridge 3, 384-d", "cca", {"ridge": 3.0, "embed_dim": 384}, {}),
    ("cca ridge 3, 128-d", "cca", {"ridge": 3.0, "embed_dim": 128}, {}),
    ("cca ridge 0.6", "cca", {"ridge": 0.6}, {}),
    ("cca ridge 1, power 2", "cca", {"power": 2.0}, {}),
    ("cca ridge 1, 384-d", "cca", {"embed_dim": 384}, {}),
    ("cca ridge 1, power 0.5", "cca", {"power": 0.5}, {}),
    ("cca ridge 3, power 0.25", "cca", {"ridge": 3.0, "power": 0.25}, {}),
    ("cca ridge 10, power 0.5", "cca", {"ridge": 10.0, "power": 0.5}, {}),
    ("infonce (defaults)", "infonce", {}, {}),
    ("infonce, linear heads", "infonce", {"hidden": []}, {}),
    ("infonce, dropout 0.5", "infonce", {"dropout": 0.5}, {}),
    ("infonce, weight decay 0.1", "infonce", {}, {"weight_decay": 0.1}),
    ("infonce, batch 512", "infonce", {}, {"batch_size": 512}),
    ("infonce, lr 3e-4, 10 epochs", "infonce", {}, {"lr": 3e-4, "epochs": 10}),
    ("infonce, dropout 0.7", "infonce", {"dropout": 0.7}, {}),
    ("infonce, dropout 0.5, 60 epochs", "infonce", {"dropout": 0.5}, {"epochs": 60}),
    ("infonce, dropout 0.5, batch 512", "infonce", {"dropout": 0.5}, {"batch_size": 512}),
    ("cusa(vse)+tuned, dropout 0.5", "cusa(vse)+tuned", {"dropout": 0.5}, {}),
    (
        "infonce, last image block fine-tuned (efficientnet-top1)",
        "infonce",
        {"image_tower": "efficientnet-top1"},
        {},
    ),
]


def run_explore(
    device: str,
    out_json: Path,
    only: list[str] | None,
    cache_dir: Path | None = None,
    features: Path | None = None,
    train_images: int | None = None,
) -> dict:
    """Train every :data:`EXPLORE` config once (seed 0) and keep its selected val metrics.
    Configs already in ``out_json`` are kept, not rerun (so the log grows run by run)."""
    done = json.loads(out_json.read_text()) if out_json.is_file() else {}
    if done and done.get("train_images") != train_images:
        raise SystemExit(f"{out_json} was made with train_images={done.get('train_images')}")
    results: dict[str, Any] = {
        "machine": machine(),
        "device": device,
        "train_images": train_images,
        "configs": done.get("configs", {}),
    }
    memo: dict = {}
    for label, row, method_options, train_options in EXPLORE:
        if label in results["configs"] or (only and label not in only):
            continue
        _, row_options, _ = resolve_row(row)
        data = flickr8k_parts(
            {**row_options, **method_options}, cache_dir, device, memo, features, train_images
        )
        start = time.perf_counter()
        _, fit = fit_one(row, data, 0, device, method_options, train_options=train_options)
        results["configs"][label] = {
            "row": row,
            "method_options": method_options,
            "train_options": train_options,
            "val": fit.best,
            "best_epoch": fit.best_epoch,
            "sec_per_epoch": fit.seconds_per_epoch,
            "seconds": time.perf_counter() - start,
        }
        print(f"{label}: val rsum {fit.best['rsum']:.1f} (epoch {fit.best_epoch})", flush=True)
        write_json_atomic(out_json, results)
    return results


def markdown_explore(results: dict, command: str) -> str:
    """The ``flickr8k-explore`` section: every config tried, with its validation rsum."""
    lines = [
        "### Toward rsum 330: what was tried, scored on Flickr8K val (`--explore`)",
        "",
        f"Command: `{command}`. Machine: {results['machine']}. One seed (0) per config; the "
        "figure is the selected checkpoint's rsum on the 1,000 val images (5,000 captions). "
        "Nothing here is scored on test: the picked config gets its test row above."
        + _train_note(results),
        "",
        "| config | method | options | trainer options | val rsum | val i2t R@1 | val t2i R@1 | epoch | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, c in results["configs"].items():
        v = c["val"]
        opts = ", ".join(f"{k}={json.dumps(x)}" for k, x in c["method_options"].items()) or "–"
        topts = ", ".join(f"{k}={json.dumps(x)}" for k, x in c["train_options"].items()) or "–"
        spe = "closed form" if not c["sec_per_epoch"] else f"{c['sec_per_epoch']:.1f}"
        lines.append(
            f"| {label} | `{c['row']}` | {opts} | {topts} | {v['rsum']:.1f} | "
            f"{v['i2t_r1']:.1f} | {v['t2i_r1']:.1f} | {c['best_epoch']} | {spe} |"
        )
    return "\n".join(lines)


#: Where the published Flickr8K figures below were read (the papers' own result tables were not
#: reachable: the stored copies of the papers hold their first pages only).
PUBLISHED_SOURCE = (
    "the *Performance of Flickr8K* table of "
    "[Paranioar/Awesome_Matching_Pretraining_Transfering](https://github.com/Paranioar/"
    "Awesome_Matching_Pretraining_Transfering/blob/03819041e0b1a1b9c0bb00c4a0962ccd6182d4e5/"
    "performance.md) (`performance.md` at commit 0381904), a survey list that transcribes each "
    "paper's Flickr8K table"
)
#: Published Flickr8K results (official 1,000-image test split, 5 captions per image), copied
#: from :data:`PUBLISHED_SOURCE`: (system, paper, image features, text features, i2t R@1, R@5,
#: R@10, t2i R@1, R@5, R@10).
PUBLISHED: list[tuple[str, str, str, str, tuple[float, ...]]] = [
    (
        "DeFrag",
        "Karpathy, Joulin & Fei-Fei, *Deep Fragment Embeddings for Bidirectional Image Sentence "
        "Mapping*, NIPS 2014",
        "R-CNN detections (AlexNet-based)",
        "dependency-tree relations over word vectors",
        (12.6, 32.9, 44.0, 9.7, 29.6, 42.5),
    ),
    (
        "m-RNN",
        "Mao, Xu, Yang, Wang & Yuille, multimodal RNN (m-RNN), 2014",
        "AlexNet",
        "recurrent language model",
        (14.5, 37.2, 48.5, 11.5, 31.0, 42.4),
    ),
    (
        "DVSA",
        "Karpathy & Fei-Fei, *Deep Visual-Semantic Alignments for Generating Image "
        "Descriptions*, CVPR 2015",
        "R-CNN regions",
        "bidirectional RNN",
        (16.5, 40.6, 54.2, 11.8, 32.1, 44.7),
    ),
    (
        "UVSE",
        "Kiros, Salakhutdinov & Zemel, *Unifying Visual-Semantic Embeddings with Multimodal "
        "Neural Language Models*, 2014",
        "VGG (OxfordNet)",
        "LSTM",
        (18.0, 40.9, 55.0, 12.5, 37.0, 51.5),
    ),
    (
        "m-CNN (ensemble)",
        "Ma, Lu, Shang & Li, *Multimodal Convolutional Neural Networks for Matching Image and "
        "Sentence*, ICCV 2015",
        "VGG",
        "convolutional matching network over word embeddings",
        (24.8, 53.7, 67.1, 20.3, 47.6, 61.7),
    ),
    (
        "FV (GMM+HGLMM)",
        "Klein, Lev, Sadeh & Wolf, *Associating Neural Word Embeddings with Deep Image "
        "Representations using Fisher Vectors*, CVPR 2015",
        "VGG",
        "Fisher vectors (GMM+HGLMM) of word2vec, CCA",
        (31.0, 59.3, 73.7, 21.2, 50.0, 64.8),
    ),
]


def _train_note(results: dict) -> str:
    n = results.get("train_images")
    if not n:
        return ""
    return (
        f" **Trained on the first {n:,} of the 6,000 training images** (sorted ids, "
        "`--train-images`), with the full official val and test splits."
    )


def markdown_flickr8k(results: dict, command: str) -> str:
    """The ``quality-flickr8k`` section of docs/benchmarks.md."""
    lines = [
        "## Flickr8K protocol (`benchmarks/quality.py train --dataset flickr8k`)",
        "",
        f"Command: `{command}`. Machine: {results['machine']}; training on `{results['device']}`. "
        "`../shared/data/flickr8k` with its official split (the records' `split` field: 6,000 "
        "train / 1,000 val / 1,000 test images, 5 captions each; `--split auto` in the CLI). "
        "Frozen default encoders (efficientnet-lite0 1280-d at 224 px, minilm 384-d) unless a "
        "row's towers fine-tune their top layers. Every checkpoint and every option was chosen "
        "on val; figures are on the 1,000 test images and their 5,000 captions, mean ± std over "
        "the seeds counted in the row. At most 30 epochs, early stop after "
        f"{PATIENCE} epochs without a better val rsum. t2t mAP: the other 4 captions of the same "
        "image are the relevant ones." + _train_note(results),
        "",
        "| row | seeds | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 | rsum | t2t mAP | val rsum | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["methods"].items():
        cells = [str(len(r["flickr/rsum"]))]
        cells += [mean_std(r[f"flickr/{k}"]) for k in (*RECALLS, "rsum")]
        cells += [mean_std(r["flickr/map_t2t"], 3), mean_std(r["val/rsum"])]
        cells.append(_seconds(r["flickr/sec_per_epoch"]))
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += _query_bank_table(results["methods"])
    if PUBLISHED:
        lines += [
            "",
            "### Published Flickr8K results (same split and protocol)",
            "",
            f"Read in {PUBLISHED_SOURCE}; not checked against the papers' own tables, which the "
            "stored copies of the papers available here do not reach. rsum is the sum of the six "
            "recalls. What differs from our rows: these systems use 2014-15 ImageNet CNNs "
            "(AlexNet, VGG; some on R-CNN region crops) at 224-px inputs and train their text "
            "encoders (RNN, LSTM, CNN) or Fisher vectors on the Flickr8K captions, most with "
            "word2vec-style word vectors; ours are frozen EfficientNet-Lite0 (224 px, from the "
            "224x224 squashed JPEGs of `../shared/data/flickr8k`) and a frozen sentence "
            "transformer (all-MiniLM-L6-v2, trained on about a billion sentence pairs), with "
            "only the heads trained here.",
            "",
            "| system | source | image features | text features | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 | rsum |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for system, source, image, text, nums in PUBLISHED:
            cells = [f"{v:.1f}" for v in nums] + [f"{sum(nums):.1f}"]
            lines.append(f"| {system} | {source} | {image} | {text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _query_bank_table(methods: dict[str, dict]) -> list[str]:
    """The rows above with query-bank normalisation (``qb/`` keys; rows without them skipped)."""
    rows = {name: r for name, r in methods.items() if "qb/rsum" in r}
    if not rows:
        return []
    lines = [
        "",
        "The same trained models (same seeds and checkpoints, nothing retrained) ranked with "
        "query-bank normalisation (`xmodal.querybank`): the bank is a seeded sample of 5,000 "
        "training images and 5,000 training captions embedded by the model, β is the best "
        f"on val of {', '.join(f'{b:g}' for b in QB_BETAS)} for each seed, and the test "
        "recalls are ranked with that β. *gain*: test rsum minus the plain-cosine rsum of the "
        "same model.",
        "",
        "| row + query bank | seeds | β (per seed) | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 | rsum | val rsum | gain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        gain = [q - p for q, p in zip(r["qb/rsum"], r["flickr/rsum"], strict=False)]
        cells = [str(len(r["qb/rsum"])), ", ".join(f"{b:g}" for b in r["qb/beta"])]
        cells += [mean_std(r[f"qb/{k}"]) for k in (*RECALLS, "rsum", "val_rsum")]
        cells.append(mean_std(gain))
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return lines


def _key_values(pairs: list[str], what: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> a dict; values read as JSON where they parse (numbers, lists)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"{what} {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def write_flickr8k_split(path: Path, train_images: int | None) -> None:
    """The split of these rows as a ``split.json`` for ``xmodal train --split file:PATH``: the
    official val and test lists, and the first ``train_images`` training images (sorted ids)."""
    from xmodal.datasets import Split, load_dataset

    split = benchmark_split("flickr8k", load_dataset(DATA / "flickr8k"))
    train = sorted(split.train)[:train_images] if train_images else split.train
    Split(train=train, val=split.val, test=split.test).to_json(path)
    print(f"wrote {path}: {len(train)} / {len(split.val)} / {len(split.test)} images")


def _data_flags(args: argparse.Namespace) -> str:
    """The ``--features`` / ``--train-images`` part of a flickr8k command line."""
    flags = f" --features {args.features.name}" if args.features else ""
    return flags + (f" --train-images {args.train_images}" if args.train_images else "")


def flickr8k_main(args: argparse.Namespace) -> None:
    """``train --dataset flickr8k``: run (or ``--merge``) the rows, write the doc section;
    with ``--explore`` run the :data:`EXPLORE` configs instead."""
    if args.write_split:
        write_flickr8k_split(args.write_split, args.train_images)
        return
    if args.explore:
        only = [m for m in args.methods.split(";") if m] if args.methods else None
        explore_json = args.json if args.json != DEFAULT_JSON else EXPLORE_JSON
        results = run_explore(
            args.device, explore_json, only, args.cache_dir, args.features, args.train_images
        )
        command = (
            "python benchmarks/quality.py train --dataset flickr8k --explore"
            + _data_flags(args)
            + (f" --json {args.json}" if explore_json != EXPLORE_JSON else "")
            + f" --device {args.device}"
        )
        if not args.no_doc:
            print("updated", update_section("flickr8k-explore", markdown_explore(results, command)))
        return
    out_json = args.json if args.json != DEFAULT_JSON else FLICKR8K_JSON
    if args.merge:
        results = merge([json.loads(p.read_text()) for p in args.merge], same_seeds=False)
        write_json_atomic(out_json, results)
    else:
        methods = [m for m in (args.methods or ",".join(FLICKR8K_ROWS)).split(",") if m]
        results = run_flickr8k(
            methods,
            range(args.first_seed, args.first_seed + args.seeds),
            args.device,
            out_json,
            _key_values(args.option, "option"),
            _key_values(args.train_option, "trainer option"),
            args.cache_dir,
            args.features,
            args.train_images,
        )
    command = args.command or (
        "python benchmarks/quality.py train --dataset flickr8k"
        + _data_flags(args)
        + (f" --methods {args.methods}" if args.methods else "")
        + f" --seeds {args.seeds} --device {args.device}"
    )
    if not args.no_doc:
        print("updated", update_section("quality-flickr8k", markdown_flickr8k(results, command)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="step", required=True)
    e = sub.add_parser("encode")
    e.add_argument("--out", type=Path, default=ROOT / "bench-features.npz")
    e.add_argument("--cache-dir", type=Path, default=None)
    e.add_argument("--datasets", default=",".join(DEFAULT_SETS), help="e.g. flickr8k")
    t = sub.add_parser("train")
    t.add_argument(
        "--features",
        type=Path,
        default=None,
        help="an `encode` .npz (default bench-features.npz; flickr8k: the feature cache)",
    )
    t.add_argument(
        "--train-images",
        type=int,
        default=None,
        help="flickr8k: train on the first N training images (sorted ids) only",
    )
    t.add_argument(
        "--dataset",
        choices=("flickr8k-1k+openmoji", "flickr8k"),
        default="flickr8k-1k+openmoji",
        help="flickr8k: the official-split protocol, features read through the feature cache",
    )
    t.add_argument("-o", "--option", action="append", default=[], help="method KEY=VALUE")
    t.add_argument("-t", "--train-option", action="append", default=[], help="trainer KEY=VALUE")
    t.add_argument("--cache-dir", type=Path, default=None)
    t.add_argument(
        "--explore", action="store_true", help="flickr8k: the val-only exploration configs"
    )
    t.add_argument(
        "--write-split", type=Path, help="flickr8k: write the rows' split.json (file:PATH) and stop"
    )
    t.add_argument(
        "--methods",
        default=None,
        help="comma-separated rows (default: cca,infonce,vse; flickr8k: all)",
    )
    t.add_argument("--seeds", type=int, default=3, help="how many seeds to run")
    t.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="run seeds FIRST..FIRST+SEEDS-1 (to add seeds to an earlier run; see --merge)",
    )
    t.add_argument("--device", default="cpu")
    t.add_argument("--json", type=Path, default=DEFAULT_JSON)
    t.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    t.add_argument("--transfer", action="store_true", help="add the aeir transfer rows")
    t.add_argument(
        "--command", help="with --merge: the commands that produced the JSONs, for the doc"
    )
    t.add_argument(
        "--merge", type=Path, nargs="+", help="only re-render the doc from these result JSONs"
    )
    args = parser.parse_args()
    if args.step == "encode":
        encode(args.out, args.cache_dir, tuple(n for n in args.datasets.split(",") if n))
        return
    if args.dataset == "flickr8k":
        flickr8k_main(args)
        return
    args.methods = args.methods or ",".join(ISSUE2_METHODS)
    if args.merge:
        results = merge([json.loads(p.read_text()) for p in args.merge])
        args.methods = ",".join(results["methods"])
    else:
        results = run(
            args.features or ROOT / "bench-features.npz",
            [m for m in args.methods.split(",") if m],
            range(args.first_seed, args.first_seed + args.seeds),
            args.device,
            args.json,
            args.transfer,
        )
    command = (
        f"python benchmarks/quality.py train --methods {args.methods} --seeds {args.seeds} "
        f"--device {args.device}" + (" --transfer" if args.transfer else "")
    )
    if args.merge and args.command:
        command = args.command
    if not args.no_doc:
        print("updated", update_section("quality", markdown(results, command)))


if __name__ == "__main__":
    main()

"""Flickr8K val rsum of CCA on the packaged EfficientNets and their concatenations.

The grid behind the ``cca-flickr8k-concat`` and ``cca-flickr8k-concat-qb`` presets
(docs/benchmarks.md, Flickr8K notes): each image feature set (one encoder, or several joined by
the ``A+B`` encoder: unit-length parts side by side, the features the presets train on) with
minilm captions, the official 6,000 / 1,000 split, CCA at each ``ridge:power`` point; one line
per cell, validation rsum only (choose on val; report the chosen cell on test with
``xmodal evaluate``). With ``--betas`` every cell is also scored with query-bank normalisation
(:mod:`xmodal.querybank`) at each inverse temperature, the bank a seeded sample of
``--bank-size`` training images and captions drawn as training draws it, once per
``--bank-seeds`` seed. Features come from the feature cache (encoded on first use). Run from
the repository root::

    python benchmarks/cca_encoder_grid.py --sets lite0,lite1,lite0+lite1 \\
        --grid 1:0.25,1:0.5,3:0.25,3:0.5,10:0.25,10:0.5
    python benchmarks/cca_encoder_grid.py --sets lite0+lite1+lite2 --grid 3:0.25,1:0.5,2:0.375
    python benchmarks/cca_encoder_grid.py --sets lite0+lite1+lite2 --grid 2:0.375 \\
        --betas 5,8,10,12,13,14,15,17,20,30,50 --bank-seeds 0,1
"""

from __future__ import annotations

import argparse

from xmodal.datasets import load_dataset
from xmodal.datasets.split_rules import parse_split
from xmodal.embedding import embed_pairs, score_embeddings
from xmodal.methods import build_method
from xmodal.training import TrainConfig, Trainer
from xmodal.training.encoded import encode_dataset


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/flickr8k")
    parser.add_argument("--sets", required=True, help="comma-separated, e.g. lite0,lite0+lite1")
    parser.add_argument("--grid", required=True, help="ridge:power points, comma-separated")
    parser.add_argument("--betas", default="", help="query-bank inverse temperatures (off: '')")
    parser.add_argument("--bank-size", type=int, default=5000, help="bank items per modality")
    parser.add_argument("--bank-seeds", default="0", help="seeds of the bank sample")
    args = parser.parse_args()
    ds = load_dataset(args.data)
    split = parse_split("auto", ds, seed=0)
    grid = [tuple(map(float, point.split(":"))) for point in args.grid.split(",")]
    betas, seeds = _floats(args.betas), [int(s) for s in _floats(args.bank_seeds)]
    for combo in args.sets.split(","):
        encoder = "+".join(f"efficientnet-{part}" for part in combo.split("+"))
        encoded = encode_dataset(ds, encoder, "minilm")
        train, val = encoded.paired(split.train), encoded.paired(split.val)
        for ridge, power in grid:
            model = build_method(
                "cca", encoded.image.shape[1], encoded.text.shape[1], ridge=ridge, power=power
            )
            result = Trainer(model, TrainConfig(device="cpu", progress=False)).fit(train, val)
            cell = f"{combo}\tridge {ridge:g}\tpower {power:g}"
            print(f"{cell}\tval rsum {result.best['rsum']:.1f}", flush=True)
            embedded = embed_pairs(model, val, "cpu")
            for beta in betas:
                scores = []
                for seed in seeds:
                    config = TrainConfig(
                        device="cpu",
                        seed=seed,
                        query_bank_beta=beta,
                        query_bank_size=args.bank_size,
                    )
                    bank = Trainer(model, config).query_bank(train)
                    scores.append(score_embeddings(embedded, query_bank=bank)["rsum"])
                shown = " ".join(f"{s:.1f}" for s in scores)
                print(f"{cell}\tbeta {beta:g}\tval rsum {shown} (bank seeds {args.bank_seeds})")


if __name__ == "__main__":
    main()

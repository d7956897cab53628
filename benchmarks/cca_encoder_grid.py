"""Flickr8K val rsum of CCA on the packaged EfficientNets and their concatenations.

The grid behind the ``cca-flickr8k-concat`` preset (docs/benchmarks.md, Flickr8K notes): each
image feature set (one encoder, or several side by side as the ``A+B`` encoder joins them:
unit-length parts, concatenated) with minilm captions, the official 6,000 / 1,000 split, CCA at
each ``ridge:power`` point; one line per cell, validation rsum only (choose on val; report the
chosen cell on test with ``xmodal evaluate``). Features come from the feature cache (encoded on
first use). Run from the repository root::

    python benchmarks/cca_encoder_grid.py --sets lite0,lite1,lite0+lite1 \\
        --grid 1:0.25,1:0.5,3:0.25,3:0.5,10:0.25,10:0.5
    python benchmarks/cca_encoder_grid.py --sets lite0+lite1+lite2 --grid 3:0.25,1:0.5,2:0.375
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from xmodal.datasets import load_dataset
from xmodal.datasets.split_rules import parse_split
from xmodal.methods import build_method
from xmodal.training import TrainConfig, Trainer
from xmodal.training.encoded import EncodedDataset, encode_dataset


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/flickr8k")
    parser.add_argument("--sets", required=True, help="comma-separated, e.g. lite0,lite0+lite1")
    parser.add_argument("--grid", required=True, help="ridge:power points, comma-separated")
    args = parser.parse_args()
    ds = load_dataset(args.data)
    split = parse_split("auto", ds, seed=0)
    grid = [tuple(map(float, point.split(":"))) for point in args.grid.split(",")]
    encoded: dict[str, EncodedDataset] = {}
    for combo in args.sets.split(","):
        parts = combo.split("+")
        for part in parts:
            if part not in encoded:
                encoded[part] = encode_dataset(ds, f"efficientnet-{part}", "minilm")
        joined = replace(
            encoded[parts[0]], image=np.concatenate([_unit(encoded[p].image) for p in parts], 1)
        )
        train, val = joined.paired(split.train), joined.paired(split.val)
        for ridge, power in grid:
            model = build_method(
                "cca", joined.image.shape[1], joined.text.shape[1], ridge=ridge, power=power
            )
            result = Trainer(model, TrainConfig(device="cpu", progress=False)).fit(train, val)
            print(f"{combo}\tridge {ridge:g}\tpower {power:g}\tval rsum {result.best['rsum']:.1f}")


if __name__ == "__main__":
    main()

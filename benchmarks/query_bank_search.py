"""Recall of index search against ``xmodal evaluate`` for a run with query-bank normalisation.

An index built from a run trained with ``query_bank_beta`` ranks cross-modal searches by the
normalised score, re-ranking ``k × BIAS_CANDIDATES_PER_ROW`` inner-product candidates
(:mod:`xmodal.search.engine`); ``evaluate`` ranks the full score matrix. This builds an exact
index of one split's records, searches every caption (text→image) and every image
(image→text) at k = 10 with and without the normalisation, and prints R@1/5/10 beside the
run's evaluated metrics, with the mean time per query. Run from the repository root, after the
README's headline command::

    python benchmarks/query_bank_search.py runs/flickr8k-qb --data ../shared/data/flickr8k
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from xmodal.datasets import load_dataset
from xmodal.index import build_index
from xmodal.search import Searcher, index_metrics
from xmodal.training.loaded import LoadedRun


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test", choices=("val", "test"))
    args = parser.parse_args()
    run = LoadedRun.open(args.run)
    if run.query_bank is None:
        raise SystemExit(f"{args.run} was trained without a query bank (query_bank_beta 0)")
    ds = load_dataset(args.data)
    wanted = set(getattr(run.split, args.split))
    subset = ds.subset([i for i, r in enumerate(ds.records) if r.id in wanted], args.split)
    with tempfile.TemporaryDirectory() as tmp:
        build_index(args.run, subset, Path(tmp) / "index", kind="flat", progress=True)
        with Searcher(Path(tmp) / "index") as searcher:
            snap = searcher.snapshot
            images, texts = snap.collections["image"], snap.collections["text"]
            print(f"{args.split}: {len(images)} images, {len(texts)} captions")
            for label in ("first", "again"):  # the first pass computes every row's bias
                t0 = time.perf_counter()
                m = index_metrics(searcher, "float", with_map=False, k=10)
                print(
                    f"index search (k = 10), query bank, {label}: i2t R@1/5/10 "
                    f"{m['i2t_r1']:.1f}/{m['i2t_r5']:.1f}/{m['i2t_r10']:.1f}, t2i "
                    f"{m['t2i_r1']:.1f}/{m['t2i_r5']:.1f}/{m['t2i_r10']:.1f}, rsum "
                    f"{m['rsum']:.1f}; {time.perf_counter() - t0:.2f} s for all "
                    f"{len(images) + len(texts)} queries"
                )
            text_vectors = np.asarray(texts.vectors)
            for label, modality in (("cosine", None), ("query bank", "text")):
                t0 = time.perf_counter()
                for q in text_vectors[:200]:
                    searcher.search("image", vectors=q, k=10, query_modality=modality)  # type: ignore[arg-type]
                ms = 1e3 * (time.perf_counter() - t0) / 200
                print(f"single text queries, {label}: {ms:.3f} ms per query")
    metrics = run.score(run.encode(ds, progress=True).paired(getattr(run.split, args.split)))
    print(
        f"evaluate (full matrix): i2t R@1/5/10 {metrics['i2t_r1']:.1f}/{metrics['i2t_r5']:.1f}/"
        f"{metrics['i2t_r10']:.1f}, t2i {metrics['t2i_r1']:.1f}/{metrics['t2i_r5']:.1f}/"
        f"{metrics['t2i_r10']:.1f}, rsum {metrics['rsum']:.1f} (cosine {metrics['rsum_cosine']:.1f})"
    )


if __name__ == "__main__":
    main()

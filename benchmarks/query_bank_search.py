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
from xmodal.search import Searcher
from xmodal.training.loaded import LoadedRun


def _recalls(found_first: np.ndarray) -> list[float]:
    """R@1/5/10 (%) from each query's rank of its first correct result (10: none in the top 10)."""
    return [100.0 * float(np.mean(found_first < k)) for k in (1, 5, 10)]


def _first_hit(ids: np.ndarray, correct: list[set[int]]) -> np.ndarray:
    first = np.full(len(ids), 10)
    for q, row in enumerate(ids):
        hits = [r for r, i in enumerate(row) if int(i) in correct[q]]
        first[q] = hits[0] if hits else 10
    return first


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
            image_vectors = np.asarray(images.vectors)
            text_vectors = np.asarray(texts.vectors)
            owner = {t: m.item for t, m in snap.meta.texts([int(t) for t in texts.ids]).items()}
            captions_of: dict[int, set[int]] = {}
            for t, i in owner.items():
                captions_of.setdefault(i, set()).add(t)
            print(f"{args.split}: {len(images)} images, {len(texts)} captions")
            passes = (("cosine", None), ("query bank, first", "x"), ("query bank, again", "x"))
            for label, modality in passes:
                t0 = time.perf_counter()
                t2i = searcher.search("image", vectors=text_vectors, k=10,
                                      query_modality="text" if modality else None)  # fmt: skip
                t1 = time.perf_counter()
                i2t = searcher.search("text", vectors=image_vectors, k=10,
                                      query_modality="image" if modality else None)  # fmt: skip
                t2 = time.perf_counter()
                r_t2i = _recalls(_first_hit(t2i.ids, [{owner[int(t)]} for t in texts.ids]))
                r_i2t = _recalls(_first_hit(i2t.ids, [captions_of[int(i)] for i in images.ids]))
                print(
                    f"index search, {label}: i2t R@1/5/10 {r_i2t[0]:.1f}/{r_i2t[1]:.1f}/"
                    f"{r_i2t[2]:.1f}, t2i {r_t2i[0]:.1f}/{r_t2i[1]:.1f}/{r_t2i[2]:.1f}, rsum "
                    f"{sum(r_i2t) + sum(r_t2i):.1f}; {1e3 * (t1 - t0) / len(texts):.2f} ms per "
                    f"text query, {1e3 * (t2 - t1) / len(images):.2f} ms per image query"
                )
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

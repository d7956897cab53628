"""How close does the whole encoding pipeline get to the model's forward pass alone?

Images (efficientnet-lite0): the full pipeline is ``encode_images`` (data-loader workers decode with
``load_image``, resize + centre-crop, collate; the main process runs the forward pass), against the
forward pass alone on the same images decoded and preprocessed beforehand, in the same batches.
Texts (minilm): ``MiniLMEncoder.encode`` (length sort, tokenise, forward) against ``forward_tokens``
alone on batches tokenised beforehand (same order, same batches). The ratio of throughputs
(pipeline / forward-only) says how much of the model's speed the pipeline keeps; 1.0 means data
preparation is fully hidden.

Run from the repository root::

    python benchmarks/encode_speed.py                 # all 1,000 Flickr8k images + 5,000 captions
    python benchmarks/encode_speed.py --limit 200 --out docs/benchmarks_encode.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from xmodal.datasets.images import load_image
from xmodal.encoders import default_num_workers, encode_images, get_image_encoder, get_text_encoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import update_section

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k-1k"


@dataclass
class Row:
    """One line of the result table: repeated, interleaved timings of both paths."""

    pipeline: str
    items: int
    forward_s: list[float]
    full_s: list[float]
    prep_per_s: float
    settings: str

    @property
    def forward_per_s(self) -> float:
        return self.items / min(self.forward_s)

    @property
    def full_per_s(self) -> float:
        return self.items / min(self.full_s)

    @property
    def ratio(self) -> float:
        """Best full-pipeline throughput over best forward-only throughput."""
        return self.full_per_s / self.forward_per_s

    @property
    def paired_ratio(self) -> float:
        """Median over repeats of forward-only time / full time measured back to back."""
        return statistics.median(f / p for f, p in zip(self.forward_s, self.full_s, strict=True))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def read_items(root: Path, limit: int | None) -> tuple[list[Path], list[str]]:
    lines = (root / "data.jsonl").read_text(encoding="utf-8").splitlines()
    if limit is not None:
        lines = lines[:limit]
    records = [json.loads(line) for line in lines if line.strip()]
    paths = [root / r["image"] for r in records]
    captions = [c for r in records for c in r["captions"]]
    return paths, captions


def bench_images(args: argparse.Namespace, paths: list[Path]) -> Row:
    enc = get_image_encoder("efficientnet-lite0", device=args.device)
    workers = default_num_workers() if args.num_workers is None else args.num_workers
    bs = args.batch_size

    start = time.perf_counter()
    tensors = [enc.preprocess(load_image(p)) for p in paths]  # decode + resize + crop, 1 process
    prep_per_s = len(paths) / (time.perf_counter() - start)
    batches = [torch.stack(tensors[i : i + bs]) for i in range(0, len(tensors), bs)]
    if enc.device.type == "cuda":
        batches = [b.pin_memory() for b in batches]

    def forward_only() -> None:
        for b in batches:
            enc.forward(b)

    def full() -> None:
        encode_images(enc, paths, batch_size=bs, num_workers=workers, progress=False)

    enc.forward(batches[0])  # warm-up: kernels, allocator, oneDNN primitives
    fwd, pipe = [], []
    for _ in range(args.repeats):  # interleaved, so background load hits both alike
        fwd.append(timed(forward_only, enc.device))
        pipe.append(timed(full, enc.device))
    settings = f"batch {bs}, {workers} workers, {enc.device.type}, channels_last"
    return Row("image: efficientnet-lite0", len(paths), fwd, pipe, prep_per_s, settings)


def bench_texts(args: argparse.Namespace, texts: list[str]) -> Row:
    enc = get_text_encoder("minilm", device=args.device)
    bs = args.text_batch_size
    order = enc.length_order(texts)

    start = time.perf_counter()
    tokenised = [
        enc.tokenize([texts[i] for i in order[s : s + bs]]) for s in range(0, len(texts), bs)
    ]
    prep_per_s = len(texts) / (time.perf_counter() - start)

    def forward_only() -> None:
        for f in tokenised:
            enc.forward_tokens(f)

    def full() -> None:
        enc.encode(texts, batch_size=bs, progress=False)

    enc.forward_tokens(tokenised[0])
    fwd, pipe = [], []
    for _ in range(args.repeats):
        fwd.append(timed(forward_only, enc.device))
        pipe.append(timed(full, enc.device))
    settings = f"batch {bs}, length-sorted, tokeniser thread, {enc.device.type}"
    return Row("text: minilm", len(texts), fwd, pipe, prep_per_s, settings)


def machine() -> str:
    device = "CPU only"
    if torch.cuda.is_available():
        device = f"GPU {torch.cuda.get_device_name(0)}"
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average at start {os.getloadavg()[0]:.2f}"
    return (
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, {device}{load}"
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| pipeline | items | forward only (items/s) | full pipeline (items/s) | ratio "
        "| median paired ratio | data prep alone, 1 process (items/s) | settings |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.pipeline} | {r.items:,} | {r.forward_per_s:,.1f} | {r.full_per_s:,.1f} "
            f"| **{r.ratio:.2f}** | {r.paired_ratio:.2f} | {r.prep_per_s:,.0f} | {r.settings} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with data.jsonl")
    parser.add_argument("--limit", type=int, default=None, help="use the first N images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--text-batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=None, help="default min(4, cores)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-texts", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown here too")
    args = parser.parse_args()
    if not (args.data / "data.jsonl").is_file():
        raise SystemExit(f"no data.jsonl in {args.data} (pass --data)")

    paths, captions = read_items(args.data, args.limit)
    info = machine()
    rows = []
    if not args.skip_images:
        rows.append(bench_images(args, paths))
    if not args.skip_texts:
        rows.append(bench_texts(args, captions))

    if hasattr(os, "getloadavg"):
        info += f", at end {os.getloadavg()[0]:.2f}"
    md = "\n".join(
        [
            "## Encoding throughput: full pipeline vs forward pass alone",
            "",
            f"Data: `{args.data.name}` ({len(paths):,} images, {len(captions):,} captions). "
            f"Machine: {info}.",
            "",
            table(rows),
            "",
            f"Throughputs are the best of {args.repeats} interleaved runs of each path (robust to "
            "other work on the machine); beside it, the median over repeats of the ratio of two "
            "back-to-back runs (robust to slow drifts of background load). "
            "Ratio = full pipeline / forward only (goal >= 0.9). Images: full = `encode_images` "
            "(DataLoader workers decode with `load_image`, resize shorter side to 256 bicubic, "
            "centre-crop 224, uint8 batches; normalisation and forward in the main process); "
            "forward only = the same batches decoded beforehand. Texts: full = "
            "`MiniLMEncoder.encode` (tokenise + forward); forward only = the same batches "
            "tokenised beforehand.",
            "",
        ]
    )
    print(md)
    print("updated", update_section("encode", md))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(md, encoding="utf-8")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()

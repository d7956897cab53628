"""Per-process throughput of the stages that scale out: encode, index build, train step.

One process, one CPU thread each (``torch.set_num_threads(1)``, ``faiss.omp_set_num_threads(1)``)
— the unit a Ray actor or a torchrun process on one core delivers; a cluster multiplies it by
the number of processes (encoding and index shards are independent; DDP adds an all-gather and
an all-reduce per step). On a GPU machine the same script also reports the GPU figures.

* encode: ``encode_images`` with efficientnet-lite0 over OpenMoji images (decode + preprocess +
  forward, no loader workers), ``MiniLMEncoder.encode`` over their captions (``minilm`` and, on
  the CPU, ``minilm-int8``).
* index build: rows/s added to a flat, HNSW (M 32) and IVF-PQ index of 256-d unit vectors
  (IVF-PQ: training on the rows separately timed), as ``build_sharded`` does per shard.
* train step: forward + backward + AdamW step of ``infonce`` and ``cusa(infonce)`` on
  1280-d / 384-d features, batch 128 pairs.

Writes the ``scale`` section of docs/benchmarks.md::

    python benchmarks/scale_throughput.py                # 256 images, 50k index rows
    python benchmarks/scale_throughput.py --images 64 --rows 20000 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, update_section

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "openmoji"


def _rate(n: int, fn: Callable[[], object], repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def encode_rates(n_images: int, device: str) -> dict[str, float]:
    from xmodal.datasets import load_dataset
    from xmodal.encoders import encode_images, get_image_encoder, get_text_encoder

    ds = load_dataset(DATA).subset(range(n_images))
    paths = [r.image for r in ds.records]
    texts = ds.captions()[0]
    img = get_image_encoder("efficientnet-lite0", device=device)
    encode_images(img, paths[:16], batch_size=16, num_workers=0, progress=False)  # warm-up
    out = {
        "images/s": _rate(
            len(paths),
            lambda: encode_images(img, paths, batch_size=64, num_workers=0, progress=False),
        )
    }
    txt = get_text_encoder("minilm", device=device)
    txt.encode(texts[:32], batch_size=32, progress=False)
    out["texts/s"] = _rate(len(texts), lambda: txt.encode(texts, batch_size=128, progress=False))
    if device == "cpu":  # the int8 graph is a CPU option (VNNI kernels)
        int8 = get_text_encoder("minilm-int8", device=device)
        int8.encode(texts[:32], batch_size=32, progress=False)
        out["texts/s, minilm-int8"] = _rate(
            len(texts), lambda: int8.encode(texts, batch_size=128, progress=False)
        )
    return out


def index_rates(rows: int, dim: int = 256) -> dict[str, float]:
    from xmodal.index.kinds import get_kind

    x = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out: dict[str, float] = {}
    for name in ("flat", "hnsw", "ivf"):
        kind = get_kind("float", name)
        params = kind.default_params(rows, dim)
        if kind.min_rows:  # trained kinds
            start = time.perf_counter()
            index = kind.new_index(dim, params, x)
            out[f"{name} train rows/s"] = rows / (time.perf_counter() - start)
        else:
            index = kind.new_index(dim, params, None)
        start = time.perf_counter()
        kind.add(index, x)
        out[f"{name} add rows/s"] = rows / (time.perf_counter() - start)
    return out


def train_rates(device: str, batch: int = 128, steps: int = 20) -> dict[str, float]:
    from xmodal.methods import build_method
    from xmodal.methods.base import Batch

    g = torch.Generator().manual_seed(0)
    out = {}
    for name in ("infonce", "cusa"):
        torch.manual_seed(0)
        method = build_method(name, 1280, 384).to(device)
        opt = torch.optim.AdamW(method.parameters(), lr=1e-3)
        image_index = torch.randint(0, batch, (batch,), generator=g)
        b = Batch(
            image=torch.randn(batch, 1280, generator=g),
            text=torch.randn(batch, 384, generator=g),
            image_index=image_index,
            text_index=torch.arange(batch),
        ).to(torch.device(device))

        def run(method=method, opt=opt, b=b) -> None:
            for _ in range(steps):
                loss = method.loss(b)["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        run()  # warm-up
        out[f"{name} pairs/s"] = _rate(batch * steps, run, repeat=2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results: dict[str, dict[str, float]] = {}
    for device in devices:
        results[device] = {**encode_rates(args.images, device), **train_rates(device)}
        print(device, results[device], flush=True)
    results["cpu"].update(index_rates(args.rows))
    print("index", results["cpu"], flush=True)
    keys = list(results["cpu"])
    head = "| per process | " + " | ".join(devices) + " |\n|---|" + "---:|" * len(devices)
    lines = [head]
    for k in keys:
        cells = [f"{results[d][k]:,.0f}" if k in results[d] else "–" for d in devices]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    gpu_note = (
        ""
        if torch.cuda.is_available()
        else "\nNo GPU was available for this run: the GPU column is missing; the CUDA paths "
        "(one GPU per Ray actor, `nccl` for DDP) are untested here.\n"
    )
    md = f"""## Scale-out: throughput per process

`python benchmarks/scale_throughput.py --images {args.images} --rows {args.rows}` —
{machine()}; {dt.date.today().isoformat()}. One process, one CPU thread (torch and FAISS), best
of the timed repeats. Encoding: OpenMoji PNGs through `encode_images` (decode + preprocess +
efficientnet-lite0, no loader workers) and their captions through MiniLM (`minilm`, and
`minilm-int8` with int8 weights). Index build: rows/s
added to one 256-d index ({args.rows:,} unit vectors; IVF-PQ training timed separately), as one
`build_sharded` shard does. Train step: forward + backward + AdamW of a 1280/384-d → 256-d
method, 128 pairs per step. Load average (1 min) at the start {load_at_start:.2f}, at the end
{os.getloadavg()[0]:.2f}: other jobs on the machine lower these figures. How these figures
become a cluster estimate: docs/scaling.md.
{gpu_note}
""" + "\n".join(lines)
    print(md)
    if not args.no_write:
        print("written to", update_section("scale", md))


if __name__ == "__main__":
    main()

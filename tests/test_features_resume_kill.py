"""Kill an encoding run with SIGKILL mid-way, resume it, and get the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xmodal.datasets.record import Dataset, Record
from xmodal.encoders import encode_images, get_image_encoder
from xmodal.features import FeatureCache, partial_paths, read_manifest

OPENMOJI = Path(__file__).parents[1].parent / "shared" / "data" / "openmoji"
N, CHUNK = 64, 16

# The child builds the same 64-record dataset and encodes it with efficientnet-lite0, committing
# every 16 rows; the test kills it once the progress file shows a committed chunk.
CHILD = """
import json, sys
from pathlib import Path
from xmodal.datasets.record import Dataset, Record
from xmodal.encoders import get_image_encoder
from xmodal.features import FeatureCache
root, cache_dir, n, chunk = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lines = (root / "data.jsonl").read_text().splitlines()[:n]
records = []
for line in lines:
    d = json.loads(line)
    records.append(Record(d["image"], root / d["image"], tuple(d["captions"]), tuple(d["labels"])))
ds = Dataset("openmoji", root, records)
enc = get_image_encoder("efficientnet-lite0", device="cpu")
FeatureCache(cache_dir).get_or_encode(
    ds, image_encoder=enc, batch_size=chunk, chunk_size=chunk, num_workers=0, progress=False
)
"""


def openmoji_slice(n: int) -> Dataset:
    lines = (OPENMOJI / "data.jsonl").read_text().splitlines()[:n]
    records = []
    for line in lines:
        d = json.loads(line)
        records.append(
            Record(d["image"], OPENMOJI / d["image"], tuple(d["captions"]), tuple(d["labels"]))
        )
    return Dataset("openmoji", OPENMOJI, records)


def rows_committed(progress: Path) -> int:
    try:
        return int(json.loads(progress.read_text())["rows_done"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
@pytest.mark.skipif(not OPENMOJI.is_dir(), reason=f"OpenMoji data not found at {OPENMOJI}")
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_sigkill_mid_encode_then_resume(tmp_path: Path) -> None:
    ds = openmoji_slice(N)
    enc = get_image_encoder("efficientnet-lite0", device="cpu")
    cache = FeatureCache(tmp_path / "cache")
    npy = cache.path(ds, enc.key, "image")
    _, progress = partial_paths(npy)

    log = (tmp_path / "child.log").open("w")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(OPENMOJI), str(cache.root), str(N), str(CHUNK)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while rows_committed(progress) < CHUNK:
            assert child.poll() is None, (tmp_path / "child.log").read_text()
            assert time.monotonic() < deadline, "child committed no chunk in 120 s"
            time.sleep(0.002)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        log.close()
    assert child.returncode == -signal.SIGKILL
    assert not npy.exists(), "the child finished before it was killed; cannot test resuming"
    done_before = rows_committed(progress)
    assert CHUNK <= done_before < N

    forwarded = 0
    forward = enc.forward

    def counting_forward(batch):  # type: ignore[no-untyped-def]
        nonlocal forwarded
        forwarded += batch.shape[0]
        return forward(batch)

    enc.forward = counting_forward  # type: ignore[method-assign]
    resumed = cache.get_or_encode(
        ds, image_encoder=enc, batch_size=CHUNK, chunk_size=CHUNK, num_workers=0, progress=False
    )
    manifest = read_manifest(npy.with_suffix(".json"))
    assert manifest.resumed_from == done_before
    assert forwarded == N - done_before < N, "the resumed run must only encode the missing rows"

    enc.forward = forward  # type: ignore[method-assign]
    uninterrupted = encode_images(
        enc, [r.image for r in ds.records], batch_size=CHUNK, num_workers=0, progress=False
    )
    assert resumed.shape == (N, 1280)
    np.testing.assert_allclose(resumed, uninterrupted, atol=1e-5)

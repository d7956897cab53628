"""The encoder registry, cheap imports, devices and weight digests."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xmodal.encoders import (
    file_digest,
    get_image_encoder,
    get_text_encoder,
    list_encoders,
    resolve_device,
)


def test_builtin_names_are_registered() -> None:
    names = list_encoders()
    assert {"efficientnet-lite0", "open_clip:*", "timm:*", "precomputed"} <= set(names["image"])
    assert {"minilm", "tfidf", "open_clip:*", "precomputed"} <= set(names["text"])
    assert list_encoders("open_clip*") == {"image": ["open_clip:*"], "text": ["open_clip:*"]}


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown image encoder 'resnet9000'.*efficientnet-lite0"):
        get_image_encoder("resnet9000")
    with pytest.raises(ValueError, match=r"unknown text encoder 'bert'.*minilm"):
        get_text_encoder("bert")
    with pytest.raises(ValueError, match="lacks a variant"):
        get_image_encoder("timm:")


def test_importing_encoders_is_cheap() -> None:
    code = (
        "import sys, xmodal.encoders as e; e.list_encoders(); "
        "heavy = ['sentence_transformers', 'open_clip', 'timm', 'sklearn', 'transformers']; "
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
    assert resolve_device("auto").type == expected


def test_file_digest_small_and_large(tmp_path: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(b"abc" * 10)
    expected = hashlib.sha256(b"30" + b"abc" * 10).hexdigest()[:12]
    assert file_digest(small) == expected

    sample = 16
    data = bytes(range(256)) * 2  # 512 bytes > 2 * sample: head + tail only
    big = tmp_path / "big.bin"
    big.write_bytes(data)
    expected = hashlib.sha256(b"512" + data[:sample] + data[-sample:]).hexdigest()[:12]
    assert file_digest(big, sample=sample) == expected
    middle_changed = data[:100] + b"X" + data[101:]
    big.write_bytes(middle_changed)
    assert file_digest(big, sample=sample) == expected  # by design: only size + ends are read
    big.write_bytes(data + b"!")
    assert file_digest(big, sample=sample) != expected

"""Tiny random Hugging Face models saved into a local hub cache laid out as the hub lays it out.

``models--<org>--<name>/snapshots/<revision>/...`` plus ``refs/main``, so that resolving a hub id
with ``HF_HUB_CACHE`` pointing here and ``HF_HUB_OFFLINE=1`` runs the real resolution code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

CLIP_ID = "xmodal-test/tiny-clip"
SIGLIP_ID = "xmodal-test/tiny-siglip"
ST_ID = "xmodal-test/tiny-minilm"
WORDS = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    *["a", "an", "the", "of", "on", "in", "at", "with", "and", "two", "dog", "dogs", "cat", "red", "blue", "green", "yellow", "car", "ball", "beach", "grass", "man", "woman", "boy", "girl", "runs", "sits", "jumps", "water", "face", "smiling", "heart", "star", "photo"],
]  # fmt: skip
_SMALL = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}
_TOKENS = {"bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0}
REVISION = "0123456789abcdef0123456789abcdef01234567"


def snapshot(cache: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in ``cache`` (``refs/main`` written)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    folder = repo / "snapshots" / REVISION
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _tokenizer(folder: Path) -> None:
    from transformers import BertTokenizer

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    BertTokenizer(str(vocab)).save_pretrained(folder)


def save_clip(folder: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    text = {"vocab_size": len(WORDS), "max_position_embeddings": 24, **_SMALL, **_TOKENS}
    vision = {"image_size": 32, "patch_size": 8, **_SMALL}
    CLIPModel(
        CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    ).save_pretrained(folder)
    _tokenizer(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)


def save_siglip(folder: Path) -> None:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(1)
    text = {"vocab_size": len(WORDS), "max_position_embeddings": 16, **_SMALL, **_TOKENS}
    vision = {"image_size": 32, "patch_size": 8, **_SMALL}
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(folder)
    _tokenizer(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def save_sentence_transformer(folder: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel

    torch.manual_seed(2)
    bert = folder.parent / f"{folder.name}-bert"
    BertModel(
        BertConfig(vocab_size=len(WORDS), max_position_embeddings=64, **_SMALL)
    ).save_pretrained(bert)
    _tokenizer(bert)
    SentenceTransformer(str(bert), device="cpu").save(str(folder))


def build_hub_cache(cache: Path) -> dict[str, Path]:
    """Write the three tiny models into ``cache``; their snapshot folders by hub id."""
    makers: dict[str, Callable[[Path], None]] = {
        CLIP_ID: save_clip,
        SIGLIP_ID: save_siglip,
        ST_ID: save_sentence_transformer,
    }
    out = {}
    for repo_id, make in makers.items():
        out[repo_id] = snapshot(cache, repo_id)
        make(out[repo_id])
    return out


def offline_env(cache: Path, home: Path) -> dict[str, str]:
    """The environment of a user whose Hugging Face cache is ``cache``, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    src = str(Path(__file__).parents[1] / "src")
    env.update(
        HF_HOME=str(home),
        HF_HUB_CACHE=str(cache),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([src, env.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
    )
    return env


def run_python(code: str, env: dict[str, str], *args: str) -> dict:
    """Run ``code`` in a fresh interpreter with ``env``; it prints one JSON object last."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])

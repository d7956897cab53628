"""hf: and sentence-transformers: models resolved by hub id from a local Hugging Face cache.

Tiny random CLIP, SigLIP and sentence-transformers models are written into a cache laid out as
the hub lays it out (``tests/hub_models.py``); a fresh interpreter with ``HF_HUB_CACHE`` pointing
there and ``HF_HUB_OFFLINE=1`` resolves them by id, so the real resolution code runs. Their
features are checked against transformers / sentence-transformers run directly on the folders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hub_models import (
    CLIP_ID,
    SIGLIP_ID,
    ST_ID,
    build_hub_cache,
    offline_env,
    run_python,
)
from PIL import Image

pytest.importorskip("transformers")

DATA = Path(__file__).parents[1].parent / "shared" / "data"
TEXTS = ["a dog runs on the beach", "two girls smiling", "a red car", "heart"]

RESOLVE = r"""
import json, sys
import numpy as np
from PIL import Image
from xmodal.encoders import encode_images, get_text_encoder
from xmodal.encoders.dual import load_dual_encoder
from xmodal.encoders.hub import ModelNotFoundError

images, texts = sys.argv[1].split("|"), json.loads(sys.argv[2])
out = {}
for repo in ("xmodal-test/tiny-clip", "xmodal-test/tiny-siglip"):
    image, text = load_dual_encoder(f"hf:{repo}", device="cpu")
    out[repo] = {
        "image": encode_images(image, images, batch_size=2, num_workers=0, progress=False).tolist(),
        "text": text.encode(texts, progress=False).tolist(),
        "keys": [image.key, text.key], "source": image.weights_source,
    }
st = get_text_encoder("sentence-transformers:xmodal-test/tiny-minilm", device="cpu")
out["st"] = {"text": st.encode(texts, progress=False).tolist(), "key": st.key}
for name in ("hf:xmodal-test/absent", "sentence-transformers:xmodal-test/absent"):
    try:
        (load_dual_encoder if name.startswith("hf:") else get_text_encoder)(name, device="cpu")
    except ModelNotFoundError as e:
        out[name] = str(e)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path], Path]:
    root = tmp_path_factory.mktemp("hf")
    folders = build_hub_cache(root / "hub")
    return root / "hub", folders, root / "home"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    emoji = DATA / "openmoji" / "images"
    if emoji.is_dir():
        return sorted(emoji.glob("*.png"))[:5]
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = [folder / f"p{i}.png" for i in range(5)]
    for p in paths:
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(p)
    return paths


def _reference_dual(folder: Path, paths: list[Path], texts: list[str]) -> tuple[np.ndarray, ...]:
    """transformers run directly on the snapshot folder (no xmodal code)."""
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder).eval()
    proc = AutoImageProcessor.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    siglip = model.config.model_type == "siglip"
    with torch.inference_mode():
        pixels = proc(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")
        img = model.get_image_features(pixel_values=pixels["pixel_values"])
        tokens = tok(
            texts,
            padding="max_length" if siglip else True,
            truncation=True,
            max_length=model.config.text_config.max_position_embeddings,
            return_tensors="pt",
        )
        txt = model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        )
    img, txt = (getattr(t, "pooler_output", t) for t in (img, txt))
    return tuple(torch.nn.functional.normalize(t, dim=-1).numpy() for t in (img, txt))


def test_hub_ids_resolve_from_the_local_cache_offline(
    hub: tuple[Path, dict[str, Path], Path], photos: list[Path]
) -> None:
    cache, folders, home = hub
    out = run_python(
        RESOLVE, offline_env(cache, home), "|".join(map(str, photos)), json.dumps(TEXTS)
    )
    for repo in (CLIP_ID, SIGLIP_ID):
        image, text = np.array(out[repo]["image"]), np.array(out[repo]["text"])
        ref_image, ref_text = _reference_dual(folders[repo], photos, TEXTS)
        assert image.shape == ref_image.shape and text.shape == (len(TEXTS), image.shape[1])
        np.testing.assert_allclose(image, ref_image, atol=1e-5)
        np.testing.assert_allclose(text, ref_text, atol=1e-5)
        image_key, text_key = out[repo]["keys"]
        assert image_key.startswith(f"hf:{repo}@") and image_key.endswith("/image")
        assert text_key.endswith("/text") and out[repo]["source"] == f"HF hub {repo}"
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(folders[ST_ID]), device="cpu").encode(TEXTS)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(np.array(out["st"]["text"]), ref, atol=1e-5)
    assert out["st"]["key"].startswith(f"sentence-transformers:{ST_ID}@")
    for name in ("hf:xmodal-test/absent", "sentence-transformers:xmodal-test/absent"):
        message = out[name]
        assert name in message and "HF_HUB_OFFLINE" in message
        assert "hf download xmodal-test/absent" in message


def test_a_local_folder_needs_no_hub(hub: tuple[Path, dict[str, Path], Path]) -> None:
    from xmodal.encoders import get_text_encoder
    from xmodal.encoders.dual import load_dual_encoder

    _, folders, _ = hub
    image, text = load_dual_encoder(f"hf:{folders[CLIP_ID]}", device="cpu")
    assert image.dim == text.dim == 16 and image.weights_source.startswith("local folder ")
    st = get_text_encoder(f"sentence-transformers:{folders[ST_ID]}", device="cpu")
    assert st.encode(["a dog"], progress=False).shape == (1, 32)
    with pytest.raises(ValueError, match="not a dual encoder"):
        load_dual_encoder(f"hf:{folders[ST_ID]}", device="cpu")


def test_zero_shot_index_of_a_caption_less_folder_then_text_search(
    hub: tuple[Path, dict[str, Path], Path], photos: list[Path], tmp_path: Path
) -> None:
    cache, folders, home = hub
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photos:
        shutil.copy(p, folder / p.name)
    env = {**offline_env(cache, home), "XMODAL_CACHE": str(tmp_path / "features")}
    xmodal = [sys.executable, "-m", "xmodal.cli"]
    index = tmp_path / "index"
    build = subprocess.run(
        [*xmodal, "index", "build", "--data", str(folder), "--out", str(index),
         "--encoder", f"hf:{CLIP_ID}", "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    query = "a dog on the grass"
    found = subprocess.run(
        [*xmodal, "search", str(index), query, "--k", "3", "--json"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr[-3000:]
    hits = json.loads(found.stdout)
    hits = hits.get("results", hits) if isinstance(hits, dict) else hits
    ids = [h.get("id") or h.get("item") for h in hits]
    # The ranking is the tiny model's own: cosine of the query's text features to each photo's.
    ref_image, ref_text = _reference_dual(folders[CLIP_ID], sorted(folder.iterdir()), [query])
    expected = [sorted(folder.iterdir())[i].name for i in np.argsort(-(ref_image @ ref_text[0]))]
    assert [Path(str(i)).name for i in ids] == [Path(e).stem for e in expected[:3]] or [
        Path(str(i)).name for i in ids
    ] == expected[:3], (ids, expected)
    assert os.path.isdir(index)

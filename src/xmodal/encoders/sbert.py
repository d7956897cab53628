"""``sentence-transformers:<id-or-path>``: any sentence-transformers text encoder, by hub id or folder.

The model is loaded by sentence-transformers itself (its modules decide pooling), following the
user's Hugging Face settings (:mod:`xmodal.encoders.hub`); embeddings are L2-normalised. The
packaged ``minilm`` (:mod:`xmodal.encoders.minilm`) is this encoder on a folder shipped in
site-packages, plus an ONNX Runtime forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from xmodal.encoders.base import (
    EncoderInfo,
    TextEncoder,
    check_texts,
    register_text_encoder,
    resolve_device,
)
from xmodal.encoders.hub import is_local, load_from_hub, model_revision

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["SentenceTransformerEncoder", "weights_file"]

#: Bump when tokenisation, pooling or normalisation changes (part of the cache key).
PREPROCESS_VERSION = 1


def weights_file(folder: Path) -> Path:
    """The weights file of a model folder (``model.safetensors``, ``pytorch_model.bin``), else
    its ``config.json``."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return folder / "config.json"


class SentenceTransformerEncoder(TextEncoder):
    """A frozen sentence-transformers model.

    Texts are sorted by length (less padding), tokenised and encoded batch by batch, and returned
    in the input order. :meth:`tokenize` and :meth:`forward_tokens` are the two halves of
    :meth:`encode`, public for benchmarks.

    Args:
        model_id: Hub id or local folder of a sentence-transformers model.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        max_seq_length: Token limit (default: the model's); longer texts are truncated.
        local_files_only: Never reach the network (the packaged models).

    Raises:
        ModelNotFoundError: the model cannot be had (the message says how to get it).
    """

    def __init__(
        self,
        model_id: str | Path,
        device: str | torch.device | None = None,
        max_seq_length: int | None = None,
        local_files_only: bool = False,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        model_id = str(model_id)
        if not hasattr(self, "name"):
            self.name = f"sentence-transformers:{model_id}"
        self.device = resolve_device(device)
        model = load_from_hub(
            self.name,
            model_id,
            lambda m: SentenceTransformer(
                m, device=str(self.device), local_files_only=local_files_only
            ),
        )
        if max_seq_length is not None:
            model.max_seq_length = int(max_seq_length)
        model.eval().requires_grad_(False)
        self.model = model
        get_dim = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if dim is None:
            raise ValueError(f"{self.name}: the model does not say its embedding size")
        self.dim = int(dim)
        self.weights_source = (
            f"local folder {model_id}" if is_local(model_id) else f"HF hub {model_id}"
        )
        revision = model_revision(model_id)
        self._key = f"{self.name}@{revision}/max{model.max_seq_length}-l2-v{PREPROCESS_VERSION}"

    @property
    def transformer(self) -> PreTrainedModel:
        """The Hugging Face model inside the sentence-transformers wrapper (its first module)."""
        model = getattr(self.model[0], "auto_model", None)
        from transformers import PreTrainedModel

        if not isinstance(model, PreTrainedModel):
            raise TypeError(f"{self.name}: the first module holds no Hugging Face model")
        return model

    @property
    def key(self) -> str:
        """``sentence-transformers:<id>@<revision>/max<tokens>-l2-v<n>``."""
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
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = True
    ) -> np.ndarray:
        """Encode ``texts`` into ``[len(texts), dim]`` float32 unit vectors.

        Batches of 64 length-sorted texts by default (the feature cache's default too): on
        2 cores MiniLM ran faster in batches of 64 than of 256 (docs/benchmarks.md, encoding
        section), and length sorting keeps the padding small either way.

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


@register_text_encoder(
    "sentence-transformers:*", EncoderInfo("the model's", "torch", "HF hub id or local folder")
)
def _sentence_transformers(
    variant: str, device: str | torch.device | None = None, max_seq_length: int | None = None
) -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(variant, device=device, max_seq_length=max_seq_length)

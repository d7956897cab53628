"""Intermediate features of the frozen backbones, for training their top layers cheaply.

Partial fine-tuning splits a backbone in two: the frozen lower layers run once, through the
feature cache, and the top layers (copies of the pretrained ones) are trained as part of a
method's head (:mod:`xmodal.models.backbone_heads`). The names carry their cut point, timm style
``name.tag``:

* ``minilm.tokens-l<k>``: the token hidden states of all-MiniLM-L6-v2 after transformer layer
  ``k`` of 6 (``k = 0`` is the embedding layer's output). Each row is ``[max_tokens, 384]``
  flattened (``dim = max_tokens * 384``, default 40 tokens; longer texts are truncated there).
  Padding positions are exactly zero; real tokens never are (they leave a LayerNorm), so the
  attention mask is ``rows.reshape(n, max_tokens, 384).abs().sum(-1) > 0``
  (:func:`token_mask`).
* ``efficientnet-lite0.blocks-<n>``: the feature map of EfficientNet-Lite0 after its stem and its
  first ``n`` of 16 MBConv blocks (``n = 15`` is the input of the last block, ``16`` the input of
  the head convolution), ``[C, H, W]`` flattened in that (NCHW) order; e.g. ``blocks-15`` rows
  are ``192 * 7 * 7 = 9408`` wide. Preprocessing is that of ``efficientnet-lite0``.

The cache stores them like any other features (2-D ``[n, dim]`` float32 arrays)::

    cache.get_or_encode(ds, text_encoder=get_text_encoder("minilm.tokens-l4"))  # [n, 40 * 384]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from xmodal.encoders.base import EncoderInfo, register_image_encoder, register_text_encoder
from xmodal.encoders.efficientnet import EfficientNetLite0Encoder
from xmodal.encoders.minilm import MiniLMEncoder

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "EFFICIENTNET_LITE0_BLOCKS",
    "MINILM_LAYERS",
    "EfficientNetLite0BlocksEncoder",
    "MiniLMTokensEncoder",
    "token_mask",
]

#: Bump when the layout of the intermediate rows changes (part of the cache keys).
LAYOUT_VERSION = 1
#: Token rows per text of ``minilm.tokens-l<k>`` unless ``max_tokens=`` says otherwise.
DEFAULT_MAX_TOKENS = 40
#: Transformer layers of all-MiniLM-L6-v2 (valid ``k`` of ``tokens-l<k>``: 0..6).
MINILM_LAYERS = 6
#: MBConv blocks of EfficientNet-Lite0 (valid ``n`` of ``blocks-<n>``: 0..16).
EFFICIENTNET_LITE0_BLOCKS = 16


def token_mask(tokens: torch.Tensor) -> torch.Tensor:
    """``[..., T, d]`` token rows -> ``[..., T]`` boolean mask of the real (non-zero) tokens."""
    return tokens.abs().sum(dim=-1) > 0


class MiniLMTokensEncoder(MiniLMEncoder):
    """MiniLM token hidden states after layer ``layer``, zero-padded to ``max_tokens`` rows.

    Args:
        layer: Cut point: 0 (embeddings) .. 6 (the last layer's output).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        model_path: A sentence-transformers BERT model folder (default: the packaged MiniLM).
        max_tokens: Token rows per text, ``[CLS]`` and ``[SEP]`` included; longer texts are
            truncated.
    """

    def __init__(
        self,
        layer: int,
        device: str | torch.device | None = None,
        model_path: str | Path | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2 ([CLS] and [SEP]), got {max_tokens}")
        super().__init__(
            device=device, model_path=model_path, max_seq_length=max_tokens, runtime="torch"
        )
        n_layers = int(self.transformer.config.num_hidden_layers)
        if not 0 <= layer <= n_layers:
            raise ValueError(f"layer must be in 0..{n_layers}, got {layer}")
        self.layer, self.max_tokens, self.width = layer, max_tokens, self.dim
        self.name = f"minilm.tokens-l{layer}"
        self.dim = max_tokens * self.width
        self._key = f"{self._key}/tokens-l{layer}-zeropad-v{LAYOUT_VERSION}"

    @torch.inference_mode()
    def forward_tokens(self, features: dict[str, Any]) -> np.ndarray:
        """Tokenised batch -> ``[b, max_tokens * width]`` float32 (padding rows zero)."""
        inputs = {
            k: features[k].to(self.device)
            for k in ("input_ids", "attention_mask", "token_type_ids")
            if k in features
        }
        out = self.transformer(**inputs, output_hidden_states=True)
        hidden = out.hidden_states[self.layer].float()
        mask = inputs["attention_mask"].to(hidden.dtype)
        hidden = (hidden * mask[..., None])[:, : self.max_tokens]
        hidden = F.pad(hidden, (0, 0, 0, self.max_tokens - hidden.shape[1]))
        return hidden.reshape(hidden.shape[0], -1).cpu().numpy()


class EfficientNetLite0BlocksEncoder(EfficientNetLite0Encoder):
    """EfficientNet-Lite0 feature map after the stem and the first ``blocks`` MBConv blocks.

    Args:
        blocks: Cut point: 0 (stem only) .. 16 (all blocks, before the head convolution).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        weights: A state-dict file (default: the packaged ImageNet weights).
    """

    def __init__(
        self,
        blocks: int,
        device: str | torch.device | None = None,
        weights: str | Path | None = None,
    ) -> None:
        super().__init__(device=device, weights=weights, runtime="torch")
        n_blocks = len(self.model._blocks)
        if not 0 <= blocks <= n_blocks:
            raise ValueError(f"blocks must be in 0..{n_blocks}, got {blocks}")
        self.blocks = blocks
        self.name = f"efficientnet-lite0.blocks-{blocks}"
        probe = self._feature_map(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))
        self.map_shape: tuple[int, int, int] = tuple(probe.shape[1:])  # type: ignore[assignment]
        self.dim = int(np.prod(self.map_shape))
        self._key = f"{self._key}/blocks-{blocks}-nchw-v{LAYOUT_VERSION}"

    @torch.inference_mode()
    def _feature_map(self, batch: torch.Tensor) -> torch.Tensor:
        model = self.model
        x = model._swish(model._bn0(model._conv_stem(self._prepare(batch))))
        for block in model._blocks[: self.blocks]:
            x = block(x)  # eval mode: no drop connect
        return x

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """``[B, 3, 224, 224]`` uint8 -> ``[B, C * H * W]`` feature maps (NCHW order)."""
        return self._feature_map(batch).flatten(1)


def _register_minilm(layer: int) -> None:
    info = EncoderInfo(f"{DEFAULT_MAX_TOKENS} x 384", "torch", "packaged")

    @register_text_encoder(f"minilm.tokens-l{layer}", info)
    def factory(
        device: str | torch.device | None = None,
        model_path: str | Path | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> MiniLMTokensEncoder:
        return MiniLMTokensEncoder(
            layer, device=device, model_path=model_path, max_tokens=max_tokens
        )


def _register_efficientnet(blocks: int) -> None:
    info = EncoderInfo("C x H x W of the feature map", "torch", "packaged")

    @register_image_encoder(f"efficientnet-lite0.blocks-{blocks}", info)
    def factory(
        device: str | torch.device | None = None, weights: str | Path | None = None
    ) -> EfficientNetLite0BlocksEncoder:
        return EfficientNetLite0BlocksEncoder(blocks, device=device, weights=weights)


for _k in range(MINILM_LAYERS + 1):
    _register_minilm(_k)
for _n in range(EFFICIENTNET_LITE0_BLOCKS + 1):
    _register_efficientnet(_n)

"""``open_clip:<arch>[:<pretrained-tag>]``: OpenCLIP image and text towers (extra ``xmodal[clip]``).

``open_clip:ViT-B-32:laion2b_s34b_b79k`` names the weights as open_clip does
(``open_clip.list_pretrained()``): open_clip resolves and fetches the tag itself, following the
user's Hugging Face settings (a tag missing while ``HF_HUB_OFFLINE`` is set is a clear error
naming it). ``weights=`` instead loads a local checkpoint into ``open_clip:<arch>`` with
``strict=True`` through open_clip's own loader (state dicts, ``{"state_dict": ...}`` wrappers,
OpenAI TorchScript archives, ``.safetensors``). Neither gives random weights with a warning (for
tests); their cache key is unique per instance, so random features are never reused.

Both towers output L2-normalised ``embed_dim`` vectors. :func:`load_open_clip` builds the two from
one model; the registry's ``open_clip:*`` names build one tower each.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
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
    file_digest,
    register_image_encoder,
    register_text_encoder,
    resolve_device,
)
from xmodal.encoders.hub import load_from_hub
from xmodal.errors import import_extra

__all__ = ["OpenClipImageEncoder", "OpenClipModel", "OpenClipTextEncoder", "load_open_clip"]


def _import_open_clip() -> Any:
    return import_extra("open_clip", needed_by="open_clip:<arch>")


class OpenClipModel:
    """One OpenCLIP model, its inference transform and tokenizer, shared by both towers.

    Args:
        arch: An open_clip architecture name (``open_clip.list_models()``), e.g. ``"ViT-B-32"``,
            optionally followed by ``:<pretrained-tag>``.
        weights: Local checkpoint file (not with a tag); neither means random weights (warns).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
    """

    def __init__(
        self,
        arch: str,
        weights: str | Path | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        arch, _, tag = arch.partition(":")
        open_clip = _import_open_clip()
        if arch not in open_clip.list_models():
            raise ValueError(
                f"unknown open_clip architecture {arch!r}; see open_clip.list_models()"
            )
        if tag and weights is not None:
            raise ValueError(f"open_clip:{arch}:{tag}: give a pretrained tag or weights=, not both")
        if tag and tag not in open_clip.list_pretrained_tags_by_model(arch):
            known = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
            raise ValueError(f"unknown open_clip pretrained tag {tag!r} for {arch}; known: {known}")
        self.arch = f"{arch}:{tag}" if tag else arch
        self.device = resolve_device(device)
        self.weights = Path(weights) if weights is not None else None
        if self.weights is not None and not self.weights.is_file():
            raise ValueError(f"open_clip:{arch} weights file not found: {self.weights}")
        if tag:  # open_clip resolves and fetches the tag (following the user's HF settings)
            model, _, transform = load_from_hub(
                f"open_clip:{self.arch}",
                tag,
                lambda t: open_clip.create_model_and_transforms(arch, pretrained=t),
            )
            found = open_clip.pretrained.download_pretrained(
                open_clip.get_pretrained_cfg(arch, tag)
            )
            weights_id = file_digest(found) if found else f"tag-{tag}"
            self.weights_source = f"open_clip tag {tag}"
        else:
            # pretrained=None: never resolve a tag (which would download); base towers off too.
            params = inspect.signature(open_clip.create_model_and_transforms).parameters
            no_base = {
                k: False
                for k in ("pretrained_text", "pretrained_hf", "pretrained_image")
                if k in params
            }
            model, _, transform = open_clip.create_model_and_transforms(
                arch, pretrained=None, **no_base
            )
            if self.weights is None:
                warnings.warn(
                    f"open_clip:{arch} has random weights (weights=None); features are "
                    "meaningless except for tests",
                    stacklevel=3,
                )
                weights_id = f"random-{uuid.uuid4().hex[:12]}"
                self.weights_source = "random"
            else:
                open_clip.load_checkpoint(model, str(self.weights), strict=True)
                weights_id = file_digest(self.weights)
                self.weights_source = f"local file {self.weights}"
        model.eval().requires_grad_(False)
        self.model = model.to(self.device)
        self.transform: Callable[[Image.Image], torch.Tensor] = transform
        self.tokenizer = open_clip.get_tokenizer(arch)
        config = open_clip.get_model_config(arch) or {}
        arch = self.arch
        self.dim = int(config.get("embed_dim") or self._probe_dim())
        pp = json.dumps(
            getattr(model.visual, "preprocess_cfg", repr(transform)), sort_keys=True, default=str
        )
        self.key = f"open_clip:{arch}@{weights_id}/pp-{hashlib.sha256(pp.encode()).hexdigest()[:8]}"

    @torch.inference_mode()
    def _probe_dim(self) -> int:
        tokens = self.tokenizer([""]).to(self.device)
        return int(self.model.encode_text(tokens).shape[-1])


class OpenClipImageEncoder(ImageEncoder):
    """The image tower of an :class:`OpenClipModel` (L2-normalised features)."""

    def __init__(self, clip: OpenClipModel) -> None:
        self.clip = clip
        self.name = f"open_clip:{clip.arch}"
        self.dim = clip.dim
        self.device = clip.device
        self.weights_source = clip.weights_source

    @property
    def key(self) -> str:
        """``open_clip:<arch>@<weights digest>/pp-<preprocessing hash>``, image tower."""
        return f"{self.clip.key}/image"

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """open_clip's inference transform (resize, crop, normalise)."""
        return self.clip.transform

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> normalised ``[3, H, W]`` float tensor."""
        return self.clip.transform(image)

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, dim]`` unit vectors."""
        x = batch.to(self.device, non_blocking=True)
        return self.clip.model.encode_image(x, normalize=True).float()


class OpenClipTextEncoder(TextEncoder):
    """The text tower of an :class:`OpenClipModel` (L2-normalised features)."""

    def __init__(self, clip: OpenClipModel) -> None:
        self.clip = clip
        self.name = f"open_clip:{clip.arch}"
        self.dim = clip.dim
        self.device = clip.device
        self.weights_source = clip.weights_source

    @property
    def key(self) -> str:
        """``open_clip:<arch>@<weights digest>/pp-<preprocessing hash>``, text tower."""
        return f"{self.clip.key}/text"

    @torch.inference_mode()
    def encode(
        self, texts: Sequence[str], batch_size: int = 256, progress: bool = True
    ) -> np.ndarray:
        """Tokenise (truncating to the context length) and encode into ``[n, dim]`` float32."""
        texts = check_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with tqdm(total=len(texts), unit="text", desc=self.name, disable=not progress) as bar:
            for start in range(0, len(texts), batch_size):
                chunk = texts[start : start + batch_size]
                tokens = self.clip.tokenizer(chunk).to(self.device, non_blocking=True)
                emb = self.clip.model.encode_text(tokens, normalize=True)
                out[start : start + len(chunk)] = emb.float().cpu().numpy()
                bar.update(len(chunk))
        return out


def load_open_clip(
    arch: str, weights: str | Path | None = None, device: str | torch.device | None = None
) -> tuple[OpenClipImageEncoder, OpenClipTextEncoder]:
    """Both towers of one OpenCLIP model, sharing its weights in memory."""
    clip = OpenClipModel(arch, weights=weights, device=device)
    return OpenClipImageEncoder(clip), OpenClipTextEncoder(clip)


_INFO = EncoderInfo("the arch's embed_dim", "torch", "open_clip pretrained tag or local file")


@register_image_encoder("open_clip:*", _INFO)
def _open_clip_image(
    variant: str, device: str | torch.device | None = None, weights: str | Path | None = None
) -> OpenClipImageEncoder:
    return OpenClipImageEncoder(OpenClipModel(variant, weights=weights, device=device))


@register_text_encoder("open_clip:*", _INFO)
def _open_clip_text(
    variant: str, device: str | torch.device | None = None, weights: str | Path | None = None
) -> OpenClipTextEncoder:
    return OpenClipTextEncoder(OpenClipModel(variant, weights=weights, device=device))

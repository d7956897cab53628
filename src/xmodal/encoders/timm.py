"""``timm:<name>``: a timm image model as a pooled-feature backbone (optional extra ``clip``).

``timm:convnext_tiny.fb_in22k`` builds the model with its pretrained weights, resolved and fetched
by timm itself (following the user's Hugging Face settings; weights missing while
``HF_HUB_OFFLINE`` is set are a clear error naming them). ``weights=`` instead loads a local file
with ``strict=True`` (timm's ``load_checkpoint``: state dicts, ``{"state_dict": ...}`` wrappers,
EMA weights, ``.safetensors``); ``pretrained=False`` without ``weights`` gives random weights with a
warning (for tests). The classifier is removed (``reset_classifier(0)``) so ``forward`` returns
pooled pre-logit features. Preprocessing is timm's evaluation transform for the model's data
config.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from xmodal.encoders.base import (
    EncoderInfo,
    ImageEncoder,
    file_digest,
    register_image_encoder,
    resolve_device,
)
from xmodal.encoders.hub import load_from_hub
from xmodal.errors import import_extra

__all__ = ["TimmImageEncoder"]


def _import_timm() -> Any:
    return import_extra("timm", "timm.data", needed_by="timm:<name>")


def _pretrained_id(model: Any) -> str:
    """Digest of the pretrained weights file timm fetched (from the HF cache), else of its config."""
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    repo = cfg.get("hf_hub_id")
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(repo, filename)
            if isinstance(found, str):
                return file_digest(found)
    text = json.dumps(cfg, sort_keys=True, default=str)
    return f"cfg-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


class TimmImageEncoder(ImageEncoder):
    """A frozen timm backbone with its classifier removed.

    Args:
        model_name: A timm model name (``timm.list_models()``), e.g. ``"convnext_tiny"``.
        weights: Local checkpoint file matching ``model_name`` (with its classifier, or pass the
            ``num_classes`` it was trained with); ``None`` means timm's pretrained weights.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        num_classes: Classifier size of the checkpoint, when not the model's default.
        pretrained: With ``weights=None``: fetch timm's pretrained weights (default) or, when
            ``False``, random weights (warns; for tests).
    """

    def __init__(
        self,
        model_name: str,
        weights: str | Path | None = None,
        device: str | torch.device | None = None,
        num_classes: int | None = None,
        pretrained: bool = True,
    ) -> None:
        timm = _import_timm()
        if not timm.is_model(model_name):
            raise ValueError(f"unknown timm model {model_name!r}; see timm.list_models()")
        self.name = f"timm:{model_name}"
        self.device = resolve_device(device)
        self.weights = Path(weights) if weights is not None else None
        if self.weights is not None and not self.weights.is_file():
            raise ValueError(f"{self.name} weights file not found: {self.weights}")
        extra = {} if num_classes is None else {"num_classes": num_classes}
        fetch = self.weights is None and pretrained
        model = load_from_hub(
            self.name, model_name, lambda m: timm.create_model(m, pretrained=fetch, **extra)
        )
        if fetch:
            weights_id = _pretrained_id(model)
            self.weights_source = f"timm pretrained {model_name}"
        elif self.weights is None:
            self.weights_source = "random"
            warnings.warn(
                f"{self.name} has random weights (weights=None); features are meaningless except "
                "for tests",
                stacklevel=3,
            )
            weights_id = f"random-{uuid.uuid4().hex[:12]}"
        else:
            timm.models.load_checkpoint(model, str(self.weights), strict=True)
            weights_id = file_digest(self.weights)
            self.weights_source = f"local file {self.weights}"
        model.reset_classifier(0)
        model.eval().requires_grad_(False)
        self.model = model.to(self.device)
        data_config = timm.data.resolve_data_config({}, model=model)
        self._transform = timm.data.create_transform(**data_config, is_training=False)
        self.input_size = tuple(data_config["input_size"])
        self.dim = self._probe_dim()
        pp = json.dumps(data_config, sort_keys=True, default=str)
        self._key = f"{self.name}@{weights_id}/pp-{hashlib.sha256(pp.encode()).hexdigest()[:8]}"

    @torch.inference_mode()
    def _probe_dim(self) -> int:
        probe = torch.zeros((1, *self.input_size), device=self.device)
        return int(self.model(probe).shape[-1])

    @property
    def key(self) -> str:
        """``timm:<name>@<weights digest>/pp-<data config hash>``."""
        return self._key

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """timm's evaluation transform (resize, crop, normalise)."""
        return self._transform

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> normalised ``[3, H, W]`` float tensor."""
        return self._transform(image)

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, dim]`` pooled features."""
        return self.model(batch.to(self.device, non_blocking=True)).float()


@register_image_encoder(
    "timm:*", EncoderInfo("the model's pooled", "torch", "timm pretrained (HF hub) or local file")
)
def _timm(
    variant: str,
    device: str | torch.device | None = None,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    pretrained: bool = True,
) -> TimmImageEncoder:
    return TimmImageEncoder(
        variant, weights=weights, device=device, num_classes=num_classes, pretrained=pretrained
    )

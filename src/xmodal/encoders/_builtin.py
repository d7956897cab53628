"""Import every built-in encoder module so that its ``@register_*`` decorators fill the registry.

Each module imports its heavy library (transformers, sentence-transformers, scikit-learn,
open_clip, timm) only when an encoder is built, so importing this module stays cheap.
"""

from __future__ import annotations

from xmodal.encoders import (
    conse,
    efficientnet,
    hf,
    intermediate,
    minilm,
    open_clip,
    precomputed,
    sbert,
    tfidf,
    timm,
)
from xmodal.encoders.base import EncoderInfo, set_encoder_info

for _name in ("tfidf", "bow"):
    set_encoder_info(
        "text", _name, EncoderInfo("the fitted vocabulary's (or SVD dim)", "numpy", "fitted")
    )

__all__ = [
    "conse",
    "efficientnet",
    "hf",
    "intermediate",
    "minilm",
    "open_clip",
    "precomputed",
    "sbert",
    "tfidf",
    "timm",
]

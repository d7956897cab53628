"""Import every built-in encoder module so that its ``@register_*`` decorators fill the registry.

Each module imports its heavy library (sentence-transformers, scikit-learn, open_clip, timm) only
when an encoder is built, so importing this module stays cheap.
"""

from __future__ import annotations

from xmodal.encoders import (
    efficientnet,
    intermediate,
    minilm,
    open_clip,
    precomputed,
    tfidf,
    timm,
)

__all__ = ["efficientnet", "intermediate", "minilm", "open_clip", "precomputed", "tfidf", "timm"]

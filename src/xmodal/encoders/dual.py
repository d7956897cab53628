"""Both towers of a dual encoder (CLIP-like: images and texts in one space), sharing one model."""

from __future__ import annotations

from pathlib import Path

import torch

from xmodal.encoders.base import ImageEncoder, TextEncoder, get_image_encoder, get_text_encoder

__all__ = ["load_dual_encoder"]


def load_dual_encoder(
    name: str, weights: str | Path | None = None, device: str | torch.device | None = None
) -> tuple[ImageEncoder, TextEncoder]:
    """The image and text towers registered as ``name``, built from one model where they share it.

    ``hf:<id>`` and ``open_clip:<arch>[:<tag>]`` load their model once for both towers; any other
    name builds each tower from the registry (``weights=`` passed to both).

    Raises:
        ValueError: the two towers' features differ in size (not a dual encoder).
    """
    image: ImageEncoder
    text: TextEncoder
    if name.startswith("hf:"):
        if weights is not None:
            raise ValueError(f"{name}: weights= is not used by hf: models (name a folder instead)")
        from xmodal.encoders.hf import load_hf_dual

        image, text = load_hf_dual(name.partition(":")[2], device=device)
    elif name.startswith("open_clip:"):
        from xmodal.encoders.open_clip import load_open_clip

        image, text = load_open_clip(name.partition(":")[2], weights, device)
    else:
        kwargs = {"weights": str(weights)} if weights is not None else {}
        image = get_image_encoder(name, device=device, **kwargs)
        text = get_text_encoder(name, device=device, **kwargs)
    if image.dim != text.dim:
        raise ValueError(
            f"{name} is not a dual encoder: image features have {image.dim} dimensions, text "
            f"features {text.dim}"
        )
    return image, text

"""Frozen backbones that turn images and texts into feature vectors, found by name.

Registered names (``list_encoders()``; ``describe_encoders()`` adds dimension, runtime and where
the weights come from): image ``efficientnet-lite0/1/2`` (packaged, ONNX Runtime), ``hf:<id>``
(CLIP, SigLIP), ``open_clip:<arch>[:<tag>]``, ``timm:<name>``, ``precomputed``; text ``minilm``
(packaged, ONNX Runtime), ``sentence-transformers:<id>``, ``hf:<id>``, ``open_clip:<arch>[:<tag>]``,
``tfidf``, ``precomputed``. Hub names follow the user's Hugging Face settings::

    from xmodal.encoders import encode_images, get_image_encoder, get_text_encoder

    image_encoder = get_image_encoder("efficientnet-lite0")          # CUDA when available
    feats = encode_images(image_encoder, paths, batch_size=64)       # [n, 1280] float32
    texts = get_text_encoder("minilm").encode(["a dog on a beach"])  # [1, 384] float32

Importing this package does not import transformers, sentence-transformers, open_clip or timm.
"""

from __future__ import annotations

from xmodal.encoders.base import (
    EncoderInfo,
    ImageEncoder,
    TextEncoder,
    check_encoder_name,
    check_texts,
    describe_encoders,
    file_digest,
    get_image_encoder,
    get_text_encoder,
    list_encoders,
    register_image_encoder,
    register_text_encoder,
    resolve_device,
)
from xmodal.encoders.batching import (
    default_num_workers,
    encode_images,
    image_loader,
    iter_image_features,
)

__all__ = [
    "EncoderInfo",
    "ImageEncoder",
    "TextEncoder",
    "check_encoder_name",
    "check_texts",
    "default_num_workers",
    "describe_encoders",
    "encode_images",
    "file_digest",
    "get_image_encoder",
    "get_text_encoder",
    "image_loader",
    "iter_image_features",
    "list_encoders",
    "register_image_encoder",
    "register_text_encoder",
    "resolve_device",
]

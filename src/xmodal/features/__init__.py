"""On-disk feature cache: memory-mapped ``.npy`` files with a manifest, resumable encoding.

::

    from xmodal.features import FeatureCache

    cache = FeatureCache(".xmodal-cache")
    image_features = cache.get_or_encode(dataset, image_encoder=image_encoder)
    text_features = cache.get_or_encode(dataset, text_encoder=text_encoder)
"""

from __future__ import annotations

from xmodal.features.cache import FeatureCache, Modality, default_cache_dir, entry_stem
from xmodal.features.manifest import FORMAT, Manifest, read_manifest
from xmodal.features.resumable import PartialArray, partial_paths
from xmodal.features.rows import image_paths, text_rows

__all__ = [
    "FORMAT",
    "FeatureCache",
    "Manifest",
    "Modality",
    "PartialArray",
    "default_cache_dir",
    "entry_stem",
    "image_paths",
    "partial_paths",
    "read_manifest",
    "text_rows",
]

"""Models named the way their ecosystems name them: a Hugging Face hub id or a local folder.

Loading follows the user's environment (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, tokens):
xmodal never sets these. A model that cannot be had (offline and not in the local cache, or no
such id) is a :class:`ModelNotFoundError` naming the model and how to get it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from xmodal.encoders.base import file_digest

__all__ = ["ModelNotFoundError", "is_local", "load_from_hub", "model_revision"]

T = TypeVar("T")


class ModelNotFoundError(ValueError):
    """A named model is neither a local folder nor obtainable from the hub (or its cache)."""


def is_local(id_or_path: str) -> bool:
    """Whether ``id_or_path`` names an existing local folder or file (else it is a hub id)."""
    return Path(id_or_path).expanduser().exists()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hint(name: str, model_id: str) -> str:
    if _offline():
        return (
            f"{name}: model {model_id!r} is not in the local Hugging Face cache "
            f"({os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'}) "
            f"and HF_HUB_OFFLINE is set; download it first (`hf download {model_id}`, with network "
            "access) or unset HF_HUB_OFFLINE"
        )
    return (
        f"{name}: cannot load model {model_id!r}: not a local folder, and not found on the "
        f"Hugging Face hub or in its cache (check the id, your network and HF_TOKEN; "
        f"`hf download {model_id}` fetches it)"
    )


def load_from_hub(name: str, model_id: str, load: Callable[[str], T]) -> T:
    """``load(model_id)``, turning "not found / offline" failures into :class:`ModelNotFoundError`.

    Args:
        name: The xmodal encoder name, for the message (e.g. ``"hf:openai/clip-vit-base-patch32"``).
        model_id: A hub id or a local folder.
        load: The library's loader (``AutoModel.from_pretrained`` and the like).
    """
    try:
        return load(model_id)
    except OSError as e:  # transformers / sentence-transformers: missing files or repository
        if is_local(model_id):
            raise ModelNotFoundError(f"{name}: {model_id} is not a loadable model ({e})") from e
        raise ModelNotFoundError(_hint(name, model_id)) from e
    except Exception as e:
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

        if isinstance(e, LocalEntryNotFoundError | HFValidationError):
            raise ModelNotFoundError(_hint(name, model_id)) from e
        raise


def _snapshot_folder(model_id: str) -> Path | None:
    """The local folder of ``model_id``: itself, or its hub snapshot in the HF cache."""
    if is_local(model_id):
        return Path(model_id).expanduser()
    from huggingface_hub import try_to_load_from_cache

    for name in ("config.json", "modules.json", "open_clip_config.json"):
        found = try_to_load_from_cache(model_id, name)
        if isinstance(found, str):
            return Path(found).parent
    return None


def model_revision(model_id: str, weights: str | Path | None = None) -> str:
    """A short identity of a model's weights, for cache keys.

    The digest of ``weights`` when given, else of the first weights file (``model.safetensors``,
    ``pytorch_model.bin``, ...) in the model's folder (a local folder, or the hub snapshot the
    loader used, from the HF cache), else the snapshot's revision, else ``"unknown"``.
    """
    if weights is not None and Path(weights).is_file():
        return file_digest(weights)
    folder = _snapshot_folder(model_id)
    if folder is None:
        return "unknown"
    for name in (
        "model.safetensors",
        "pytorch_model.bin",
        "open_clip_model.safetensors",
        "model.safetensors.index.json",
    ):
        if (folder / name).is_file():
            return file_digest(folder / name)
    return folder.name[:12]

"""The manifest JSON beside each cached feature file: what it holds and where it came from."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmodal.errors import BadInputError

__all__ = ["FORMAT", "Manifest", "read_manifest", "write_manifest"]

#: Version of the cache layout and manifest schema; part of every entry's key.
FORMAT = 1


@dataclass(frozen=True)
class Manifest:
    """Description of one cached ``[rows, dim]`` feature array.

    Attributes:
        encoder: The encoder's cache key (weights + preprocessing + version).
        encoder_name: The registry name (``efficientnet-lite0``, ``minilm``, ...).
        modality: ``"image"`` (one row per record) or ``"text"`` (one row per caption, in
            ``Dataset.captions()`` order).
        rows: Number of rows.
        dim: Feature size.
        dtype: NumPy dtype name of the array (``"float32"``).
        dataset: Dataset name.
        dataset_fingerprint: ``Dataset.fingerprint()`` when encoded.
        created: UTC time the entry was completed, ISO 8601.
        xmodal_version: Version of xmodal that wrote it.
        seconds: Wall time of the encoding run that completed it.
        resumed_from: Rows already on disk from an interrupted run when this run started (0 for a
            fresh run).
        format: Cache format version (:data:`FORMAT`).
    """

    encoder: str
    encoder_name: str
    modality: str
    rows: int
    dim: int
    dtype: str
    dataset: str
    dataset_fingerprint: str
    created: str
    xmodal_version: str
    seconds: float = 0.0
    resumed_from: int = 0
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return dataclasses.asdict(self)


def write_manifest(
    npy: Path,
    encoder: Any,
    modality: str,
    dataset: Any,
    fingerprint: str,
    rows: int,
    dim: int,
    seconds: float,
    resumed_from: int = 0,
) -> Manifest:
    """Write the manifest of a completed cache entry ``npy`` (beside it, ``.json``), atomically.

    ``encoder`` is the :class:`~xmodal.encoders.base.ImageEncoder` / ``TextEncoder`` that made
    the rows, ``dataset`` the :class:`~xmodal.datasets.Dataset` they came from.
    """
    from datetime import UTC, datetime

    from xmodal import __version__
    from xmodal.io import write_json_atomic

    manifest = Manifest(
        encoder=encoder.key,
        encoder_name=encoder.name,
        modality=modality,
        rows=rows,
        dim=dim,
        dtype="float32",
        dataset=dataset.name,
        dataset_fingerprint=fingerprint,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        xmodal_version=__version__,
        seconds=round(seconds, 3),
        resumed_from=resumed_from,
    )
    write_json_atomic(npy.with_suffix(".json"), manifest.to_dict())
    return manifest


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest JSON.

    Raises:
        BadInputError: the file is missing, not JSON, or lacks fields.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise BadInputError(path, "feature manifest not found") from e
    except (OSError, ValueError) as e:
        raise BadInputError(path, f"unreadable feature manifest ({e})") from e
    if not isinstance(data, dict):
        raise BadInputError(path, "feature manifest is not a JSON object")
    names = {f.name for f in dataclasses.fields(Manifest)}
    try:
        return Manifest(**{k: v for k, v in data.items() if k in names})
    except TypeError as e:
        raise BadInputError(path, f"feature manifest lacks fields ({e})") from e

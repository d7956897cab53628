"""How an index makes binary codes, and indexing precomputed vectors (no model, no torch).

* :class:`CodeChoice` — codes from a method's hash head, or the sign of an ITQ / random rotation
  of the embeddings (:mod:`xmodal.index.codes`); the rotation is stored in the index as
  ``rotation.npz`` so that queries and added items get their codes the same way.
* :func:`build_index_from_vectors` — an index of precomputed embeddings (query it with vectors).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.datasets.record import Record
from xmodal.evaluation import pack_codes
from xmodal.index.codes import CodeRotation, fit_rotation
from xmodal.index.items import EncodedItems, check_bits
from xmodal.index.manifest import IndexManifest
from xmodal.index.snapshot import ROTATION
from xmodal.index.writer import create_index

__all__ = ["CodeChoice", "build_index_from_vectors", "load_code_choice", "save_rotation"]


@dataclass(frozen=True)
class CodeChoice:
    """Where codes come from: ``source`` is ``head``, ``itq`` or ``random``; ``rotation`` is set
    for the two rotations."""

    source: str
    bits: int
    rotation: CodeRotation | None = None
    fit_on: str | None = None

    def spec(self) -> dict[str, Any]:
        """For the manifest."""
        return {
            "source": self.source,
            "bits": self.bits,
            "rotation": "rotation.npz" if self.rotation is not None else None,
            "fit_on": self.fit_on,
        }

    def codes(self, vectors: np.ndarray, head_codes: np.ndarray | None) -> np.ndarray:
        """Packed uint8 codes of rows with these embeddings (and head codes)."""
        if self.source == "head":
            if head_codes is None:
                raise ValueError("codes come from the method's hash head, but none were given")
            return pack_codes(head_codes)
        assert self.rotation is not None
        if len(vectors) == 0:
            return np.zeros((0, self.bits // 8), dtype=np.uint8)
        return pack_codes(self.rotation.encode(vectors))


def save_rotation(rotation: CodeRotation, path: Path) -> None:
    """Write a rotation to exactly ``path`` (``np.savez`` appends ``.npz`` to bare paths)."""
    with open(path, "wb") as f:
        rotation.save(f)


def load_code_choice(folder: Path, manifest: IndexManifest) -> CodeChoice:
    """How a committed version makes codes (its rotation read from ``rotation.npz``)."""
    spec = manifest.codes
    rotation = None
    if spec.get("rotation"):
        with open(folder / spec["rotation"], "rb") as f:
            rotation = CodeRotation.load(f)
    return CodeChoice(spec["source"], int(manifest.bits), rotation, spec.get("fit_on"))


def _sample_rows(a: np.ndarray, b: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """At most ``rows`` rows drawn without replacement from ``a`` and ``b`` together."""
    both = len(a) + len(b)
    pick = np.sort(np.random.default_rng(seed).choice(both, min(both, rows), replace=False))
    return np.concatenate([a[pick[pick < len(a)]], b[pick[pick >= len(a)] - len(a)]])


def build_index_from_vectors(
    out: str | Path,
    records: Sequence[Record],
    image_vectors: np.ndarray,
    text_vectors: np.ndarray | None = None,
    text_to_image: np.ndarray | None = None,
    *,
    bits: int = 64,
    codes: str = "itq",
    fit_rows: int = 100_000,
    kind: str = "auto",
    float_kind: str | None = None,
    binary_kind: str | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    overwrite: bool = False,
    seed: int = 0,
    rotation: CodeRotation | None = None,
) -> IndexManifest:
    """Index precomputed embeddings (no model: query the index with vectors).

    Codes are the sign of an ITQ (``codes="itq"``) or random rotation fitted on at most
    ``fit_rows`` rows drawn from both modalities, or of a given ``rotation`` (e.g. one fitted
    once for several indexes); the rotation is stored in the index, so query vectors get their
    codes the same way.
    """
    image_vectors = np.ascontiguousarray(image_vectors, dtype=np.float32)
    d = image_vectors.shape[1]
    if text_vectors is None:
        text_vectors = np.zeros((0, d), dtype=np.float32)
        text_to_image = np.zeros(0, dtype=np.int64)
    text_vectors = np.ascontiguousarray(text_vectors, dtype=np.float32)
    if codes not in ("itq", "random"):
        raise ValueError(f"codes must be 'itq' or 'random' for precomputed vectors, got {codes!r}")
    if rotation is None:
        bits = check_bits(bits)
        sample = _sample_rows(image_vectors, text_vectors, fit_rows, seed)
        rotation = fit_rotation(sample, bits, "itq" if codes == "itq" else "random", seed=seed)
        fit_on = "indexed items"
    else:
        if rotation.mean.shape[0] != d:
            raise ValueError(f"rotation expects {rotation.mean.shape[0]}-d vectors, got {d}-d")
        bits, codes, fit_on = check_bits(rotation.bits), rotation.kind, "given rotation"
    choice = CodeChoice(codes, bits, rotation, fit_on)
    items = EncodedItems(
        records,
        image_vectors,
        choice.codes(image_vectors, None),
        text_vectors,
        choice.codes(text_vectors, None),
        np.asarray(text_to_image, dtype=np.int64),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ROTATION
        save_rotation(rotation, path)
        return create_index(
            out,
            items,
            codes=choice.spec(),
            model={"kind": "none"},
            files={ROTATION: path},
            kind=kind,
            float_kind=float_kind,
            binary_kind=binary_kind,
            params=params,
            overwrite=overwrite,
        )

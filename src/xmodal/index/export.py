"""Export from any run: float embeddings and binary codes for the images and texts of a dataset.

Codes (:func:`choose_codes`) come from the method's own hash head when it has one and the
requested length is the head's; otherwise from the sign of a rotation of the embeddings
(:mod:`xmodal.index.codes`): ITQ fitted on the run's training-split embeddings of both modalities
(``itq``), or a random orthogonal projection (``random``). Zero-shot dual encoders have no
training split: their ITQ rotation is fitted on the embeddings being indexed.

::

    from xmodal.index.export import export_run
    exported = export_run("runs/emoji", "data/openmoji", bits=32)
    exported.items.image_vectors.shape, exported.items.image_codes.shape   # (n, 256), (n, 4)
    exported.save("emoji-export")                                          # .npy files + JSON
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from xmodal.datasets import Dataset, OnBad, load_dataset
from xmodal.index.codes import CodeRotation, fit_rotation
from xmodal.index.coding import CodeChoice, save_rotation
from xmodal.index.embedders import DualEncoderModel, EmbeddedDataset, IndexModel, RunModel
from xmodal.index.items import EncodedItems, check_bits
from xmodal.io import atomic_write, write_json_atomic

__all__ = [
    "CodeChoice",
    "CodeSource",
    "Export",
    "choose_codes",
    "encode_items",
    "export_dataset",
    "export_run",
    "make_model",
    "run_training_embeddings",
    "save_rotation",
]

CodeSource = Literal["auto", "head", "itq", "random"]
CODE_SOURCES = ("auto", "head", "itq", "random")
DEFAULT_BITS = 64


def choose_codes(
    model: IndexModel,
    bits: int | None,
    codes: str,
    fit_embeddings: np.ndarray | None,
    fit_on: str | None,
    seed: int = 0,
) -> CodeChoice:
    """Decide how codes are made and fit the rotation.

    ``auto``: the method's hash head when it has one and ``bits`` is ``None`` or its length;
    else ITQ on ``fit_embeddings`` (when there are more rows than bits and ``bits <= d``); else a
    random rotation (with a warning).

    Raises:
        ValueError: ``head`` without a hash head or at another length; ``itq`` with too few
            rows or more bits than dimensions; a bad code length.
    """
    if codes not in CODE_SOURCES:
        raise ValueError(f"codes must be one of {', '.join(CODE_SOURCES)}; got {codes!r}")
    head = model.head_bits()
    if codes == "head" or (codes == "auto" and head is not None and bits in (None, head)):
        if head is None:
            raise ValueError(
                "codes='head' but the run's method has no hash head; use itq or random"
            )
        if bits not in (None, head):
            raise ValueError(
                f"the method's hash head makes {head}-bit codes; {bits} bits need codes='itq' or 'random'"
            )
        return CodeChoice("head", check_bits(head))
    bits = check_bits(DEFAULT_BITS if bits is None else bits)
    rows = 0 if fit_embeddings is None else len(fit_embeddings)
    if codes == "auto":
        codes = "itq" if rows > bits and bits <= model.dim else "random"
        if codes == "random":
            why = (
                f"bits ({bits}) exceed the embedding size ({model.dim})"
                if bits > model.dim
                else f"only {rows} embeddings to fit on (need more than {bits})"
            )
            warnings.warn(
                f"{bits}-bit codes from a random rotation: ITQ impossible, {why}", stacklevel=2
            )
    if codes == "itq":
        if bits > model.dim:
            raise ValueError(f"itq needs bits <= the embedding size ({model.dim}), got {bits}")
        if fit_embeddings is None or rows <= bits:
            raise ValueError(f"itq needs more than {bits} embeddings to fit on, got {rows}")
        return CodeChoice("itq", bits, fit_rotation(fit_embeddings, bits, "itq", seed=seed), fit_on)
    if fit_embeddings is not None and rows >= 2:
        rotation = fit_rotation(fit_embeddings, bits, "random", seed=seed)
    else:
        rng = np.random.default_rng(seed)
        g = rng.standard_normal((model.dim, bits))
        if bits <= model.dim:
            g, _ = np.linalg.qr(g)
        rotation = CodeRotation(np.zeros(model.dim, np.float32), g.astype(np.float32), "random")
    return CodeChoice("random", bits, rotation, fit_on if rows >= 2 else None)


def run_training_embeddings(
    model: RunModel, cache_dir: str | Path | None = None, progress: bool = True
) -> np.ndarray | None:
    """Embeddings of the run's training split (images and captions stacked), or ``None`` with a
    warning when the run's data cannot be read any more."""
    run = model.run
    try:
        ds = load_dataset(run.config.data)
    except (OSError, ValueError) as e:
        warnings.warn(
            f"cannot read the run's training data {run.config.data!r} ({e}); the code rotation "
            "is fitted on the items being indexed instead",
            stacklevel=2,
        )
        return None
    encoded = run.encode(ds, cache_dir, progress)
    train = encoded.paired(run.split.train)
    image = model.embed_features(train.image, "image").vectors
    text = model.embed_features(train.text, "text").vectors
    return np.concatenate([image, text])


def encode_items(embedded: EmbeddedDataset, choice: CodeChoice) -> EncodedItems:
    """Embedded rows + codes -> :class:`EncodedItems`."""
    return EncodedItems(
        records=embedded.dataset.records,
        image_vectors=embedded.image.vectors,
        image_codes=choice.codes(embedded.image.vectors, embedded.image.head_codes),
        text_vectors=embedded.text.vectors,
        text_codes=choice.codes(embedded.text.vectors, embedded.text.head_codes),
        text_to_image=embedded.text_to_image,
    )


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a path
        np.save(f, array)


@dataclass(frozen=True)
class Export:
    """Embeddings and codes of a dataset, and how the codes were made."""

    items: EncodedItems
    codes: CodeChoice
    model: IndexModel

    def save(self, folder: str | Path) -> Path:
        """Write ``image_vectors.npy``, ``image_codes.npy`` (packed), ``text_*.npy``,
        ``text_to_image.npy``, ``ids.json`` (record ids) and ``export.json``; the rotation as
        ``rotation.npz`` when there is one."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        it = self.items
        for name in ("image_vectors", "image_codes", "text_vectors", "text_codes", "text_to_image"):
            array = np.asarray(getattr(it, name))
            atomic_write(folder / f"{name}.npy", functools.partial(_save_npy, array=array))
        write_json_atomic(folder / "ids.json", [r.id for r in it.records])
        rotation = self.codes.rotation
        if rotation is not None:
            atomic_write(folder / "rotation.npz", lambda p: save_rotation(rotation, p))
        info = {
            "model": self.model.spec(),
            "codes": self.codes.spec(),
            "dim": it.dim,
            "bits": it.bits,
        }
        atomic_write(folder / "export.json", lambda p: p.write_text(json.dumps(info, indent=2)))
        return folder


def make_model(
    run: str | Path | None, encoder: str | None, weights: str | Path | None, device: str | None
) -> IndexModel:
    """A :class:`RunModel` for ``run`` or a :class:`DualEncoderModel` for ``encoder``."""
    if run is not None and encoder is None:
        if weights is not None:
            raise ValueError("weights= goes with encoder=, not with a trained run")
        return RunModel(run, device)
    if encoder is not None and run is None:
        return DualEncoderModel(encoder, weights, device)
    raise ValueError("give either a run directory or a dual encoder (encoder=...), not both")


def export_dataset(
    model: IndexModel,
    dataset: Dataset,
    *,
    bits: int | None = None,
    codes: str = "auto",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    seed: int = 0,
) -> Export:
    """Embed ``dataset`` with ``model`` and make its codes (rotation fitted as documented)."""
    embedded = model.embed_dataset(dataset, cache_dir, progress)
    head = model.head_bits()
    uses_head = codes == "head" or (codes == "auto" and head is not None and bits in (None, head))
    fit: np.ndarray | None = None
    fit_on: str | None = None
    if not uses_head:
        if isinstance(model, RunModel):
            fit = run_training_embeddings(model, cache_dir, progress)
            fit_on = "run training split"
        if fit is None:
            fit = np.concatenate([embedded.image.vectors, embedded.text.vectors])
            fit_on = "indexed items"
    choice = choose_codes(model, bits, codes, fit, fit_on, seed)
    return Export(encode_items(embedded, choice), choice, model)


def export_run(
    run_dir: str | Path,
    data: str | Path | None = None,
    *,
    bits: int | None = None,
    codes: str = "auto",
    cache_dir: str | Path | None = None,
    device: str | None = None,
    on_bad: OnBad = "error",
    progress: bool = True,
) -> Export:
    """Embeddings and codes of ``data`` (default: the run's own data) through a trained run."""
    model = RunModel(run_dir, device)
    ds = load_dataset(data if data is not None else model.run.config.data, on_bad=on_bad)
    return export_dataset(model, ds, bits=bits, codes=codes, cache_dir=cache_dir, progress=progress)

"""Build an index from a trained run or a zero-shot dual encoder; add and remove items.

::

    from xmodal.index import add_to_index, build_index, remove_from_index

    build_index("runs/emoji", "data/openmoji", "indexes/emoji", bits=64)        # trained run
    build_index(None, "photos/", "indexes/photos", encoder="open_clip:ViT-B-32",
                weights="ViT-B-32.pt")                                            # zero-shot
    add_to_index("indexes/emoji", "data/more-emoji")      # encoded with the index's own model
    remove_from_index("indexes/emoji", ["images/1F600.png"])
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xmodal.datasets import Dataset, OnBad, load_dataset, summarize_skipped
from xmodal.index.coding import load_code_choice, save_rotation
from xmodal.index.embedders import load_model
from xmodal.index.export import encode_items, export_dataset, make_model
from xmodal.index.manifest import VERSIONS, IndexManifest, read_manifest, read_pointer
from xmodal.index.snapshot import ROTATION
from xmodal.index.writer import OnExists, append_items, create_index, delete_items
from xmodal.io import write_json_atomic

__all__ = ["SKIPPED", "add_to_index", "build_index", "remove_from_index"]

#: File of an index version listing the bad input its build skipped (count by reason, first few).
SKIPPED = "skipped.json"


def build_index(
    run: str | Path | None,
    data: str | Path | Dataset,
    out: str | Path,
    *,
    encoder: str | None = None,
    weights: str | Path | None = None,
    bits: int | None = None,
    codes: str = "auto",
    kind: str = "auto",
    float_kind: str | None = None,
    binary_kind: str | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    overwrite: bool = False,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    on_bad: OnBad = "error",
    progress: bool = True,
) -> IndexManifest:
    """Index every record of ``data`` (images with or without captions).

    Args:
        run: A trained run directory, or ``None`` with ``encoder``.
        data: Any dataset :func:`~xmodal.datasets.load_dataset` reads (or a loaded
            :class:`~xmodal.datasets.Dataset`); a plain folder of images without captions is fine.
        out: The index folder.
        encoder: Zero-shot dual encoder, e.g. ``open_clip:ViT-B-32`` (with ``weights``).
        weights: Local weights file of ``encoder``.
        bits: Code length (16, 32, 64, 128, ...); default the hash head's, else 64.
        codes: ``auto``, ``head``, ``itq`` or ``random`` (see :func:`~xmodal.index.export.choose_codes`).
        kind: ``auto``, ``flat``, ``hnsw`` or ``ivf`` (see :mod:`xmodal.index.kinds`).
        float_kind: Override ``kind`` for the float indexes.
        binary_kind: Override ``kind`` for the binary indexes.
        params: Index parameter overrides, ``{"float": {...}, "binary": {...}}``.
        overwrite: Replace an existing index (atomically).
        cache_dir: Feature cache (default ``$XMODAL_CACHE`` or ``~/.cache/xmodal``).
        device: ``cpu``, ``cuda`` or ``None`` (auto).
        on_bad: ``error`` or ``skip`` bad input while reading ``data``.
        progress: Show progress bars.

    Returns:
        The committed manifest.
    """
    out = Path(out)
    if (out / "CURRENT").is_file() and not overwrite:
        raise FileExistsError(f"{out} already holds an index; pass overwrite to replace it")
    model = make_model(run, encoder, weights, device)
    ds = data if isinstance(data, Dataset) else load_dataset(data, on_bad=on_bad)
    exported = export_dataset(
        model, ds, bits=bits, codes=codes, cache_dir=cache_dir, progress=progress
    )
    files = dict(model.files())
    with tempfile.TemporaryDirectory() as tmp:
        if exported.codes.rotation is not None:
            path = Path(tmp) / ROTATION
            save_rotation(exported.codes.rotation, path)
            files[ROTATION] = path
        if ds.skipped:  # what --on-bad skip dropped, kept with the index
            files[SKIPPED] = write_json_atomic(Path(tmp) / SKIPPED, summarize_skipped(ds.skipped))
        return create_index(
            out,
            exported.items,
            codes=exported.codes.spec(),
            model=model.spec(),
            files=files,
            kind=kind,
            float_kind=float_kind,
            binary_kind=binary_kind,
            params=params,
            overwrite=overwrite,
        )


def add_to_index(
    index_dir: str | Path,
    data: str | Path | Dataset,
    *,
    on_exists: OnExists = "error",
    cache_dir: str | Path | None = None,
    device: str | None = None,
    on_bad: OnBad = "error",
    progress: bool = True,
) -> IndexManifest:
    """Encode the records of ``data`` with the index's own model and codes, and add them.

    Raises:
        ValueError: ids already indexed (with ``on_exists="error"``), or an index built from
            arrays only (no model to encode with).
    """
    index_dir = Path(index_dir)
    pointer = read_pointer(index_dir)
    folder = index_dir / VERSIONS / pointer.dir
    manifest = read_manifest(folder, pointer.manifest_sha256)
    model = load_model(manifest.model, folder, device)
    choice = load_code_choice(folder, manifest)
    ds = data if isinstance(data, Dataset) else load_dataset(data, on_bad=on_bad)
    items = encode_items(model.embed_dataset(ds, cache_dir, progress), choice)
    return append_items(index_dir, items, on_exists=on_exists, expect_model=manifest.model)


def remove_from_index(
    index_dir: str | Path, ids: Sequence[str], *, missing_ok: bool = False
) -> IndexManifest:
    """Remove items by id (their image and caption rows)."""
    return delete_items(index_dir, ids, missing_ok=missing_ok)

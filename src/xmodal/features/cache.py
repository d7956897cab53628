"""The on-disk feature cache: encode once per (dataset, encoder, modality), then memory-map.

Layout under ``root``::

    <dataset name>-<fingerprint>/
        <modality>-<encoder key slug>-<hash>.npy            # [rows, dim] float32
        <modality>-<encoder key slug>-<hash>.json           # Manifest, written last
        <modality>-<encoder key slug>-<hash>.partial.npy    # while encoding (resumable)
        <modality>-<encoder key slug>-<hash>.progress.json  # rows committed so far
        <modality>-<encoder key slug>-<hash>.lock
        image-<encoder key slug>-<hash>.digests.npy         # [rows, 16] uint8 content digests

An entry is valid only when its manifest exists and agrees with the ``.npy`` header. Image rows
are also keyed by their file's content (:mod:`xmodal.features.content`): a row whose image bytes
changed since it was encoded is encoded again before the entry is handed out. Encoding
commits every ``chunk_size`` rows; a run that is killed resumes from the last committed chunk.
Precomputed features (``.mat``/``.h5`` datasets, ``precomputed`` encoders) pass through untouched.
A concatenation of image encoders (``A+B``) whose parts are all cached is joined from their
entries instead of encoded again.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from xmodal.datasets.record import Dataset
from xmodal.encoders.base import ImageEncoder, TextEncoder, get_image_encoder, get_text_encoder
from xmodal.encoders.batching import DIGEST_SIZE, iter_image_rows
from xmodal.encoders.concat import ConcatImageEncoder
from xmodal.errors import BadInputError
from xmodal.features.content import (
    digests_path,
    file_digests,
    migrate_digests,
    read_digests,
    write_digests,
)
from xmodal.features.manifest import FORMAT, Manifest, read_manifest, write_manifest
from xmodal.features.resumable import PartialArray, partial_paths
from xmodal.features.rows import image_paths, text_rows
from xmodal.io import atomic_write, default_cache_dir, exclusive_lock

__all__ = [
    "FeatureCache",
    "Modality",
    "default_cache_dir",
    "entry_stem",
]

Modality = Literal["image", "text"]
_log = logging.getLogger(__name__)
#: Rows per block when a concatenation's entry is joined from its parts' entries.
_ASSEMBLE_ROWS = 4096
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def _slug(text: str, limit: int = 60) -> str:
    return _UNSAFE.sub("_", text).strip("._")[:limit] or "x"


def entry_stem(encoder_key: str, modality: str) -> str:
    """File stem of a cache entry: readable slug of the key plus a hash of the full key."""
    digest = hashlib.sha256(f"{FORMAT}|{modality}|{encoder_key}".encode()).hexdigest()[:10]
    return f"{modality}-{_slug(encoder_key)}-{digest}"


class FeatureCache:
    """Feature arrays on disk, keyed by (dataset fingerprint, encoder key, modality, format).

    Example::

        cache = FeatureCache(".xmodal-cache")
        img = cache.get_or_encode(ds, image_encoder=get_image_encoder("efficientnet-lite0"))
        txt = cache.get_or_encode(ds, text_encoder=get_text_encoder("minilm"))
        img.shape, txt.shape  # (n_records, 1280), (n_captions, 384); read-only memory maps

    Args:
        root: Cache folder (created on first write).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r})"

    def folder(self, dataset: Dataset, fingerprint: str | None = None) -> Path:
        """Folder holding ``dataset``'s entries."""
        fp = fingerprint or dataset.fingerprint()
        return self.root / f"{_slug(dataset.name, 40)}-{fp}"

    def path(
        self, dataset: Dataset, encoder_key: str, modality: Modality, fingerprint: str | None = None
    ) -> Path:
        """The ``.npy`` path of an entry (which may not exist yet)."""
        _check_modality(modality)
        return self.folder(dataset, fingerprint) / f"{entry_stem(encoder_key, modality)}.npy"

    def get(
        self, dataset: Dataset, encoder_key: str, modality: Modality, fingerprint: str | None = None
    ) -> np.ndarray | None:
        """The cached array (read-only memory map), or ``None`` when absent or not valid.

        An image entry is valid only while every row's image file has the content it was
        encoded from (see :meth:`stale_rows`).
        """
        fp = fingerprint or dataset.fingerprint()
        npy = self.path(dataset, encoder_key, modality, fp)
        manifest = self._valid_manifest(npy, encoder_key, modality, fp)
        if manifest is None or self.stale_rows(dataset, npy, manifest, modality).size:
            return None
        return np.load(npy, mmap_mode="r")

    def stale_rows(
        self, dataset: Dataset, npy: Path, manifest: Manifest, modality: Modality
    ) -> np.ndarray:
        """Rows of a valid entry whose image file's content differs from the one encoded.

        Hashes every image file (no decoding). Text rows are covered by the dataset fingerprint
        (it hashes the captions), so a text entry has no stale rows. An entry written before row
        digests existed is migrated once (:func:`~xmodal.features.content.migrate_digests`), or,
        when its files were modified after it was written, is stale as a whole.
        """
        if modality != "image":
            return np.zeros(0, dtype=np.int64)
        paths = image_paths(dataset)
        current = file_digests(paths)
        recorded = read_digests(npy, manifest.rows)
        if recorded is None:
            recorded = migrate_digests(npy, manifest, paths, current)
            if recorded is None:
                return np.arange(manifest.rows, dtype=np.int64)
        return np.flatnonzero((recorded != current).any(axis=1))

    def manifest(
        self, dataset: Dataset, encoder_key: str, modality: Modality, fingerprint: str | None = None
    ) -> Manifest | None:
        """The manifest of a valid entry, or ``None``."""
        fp = fingerprint or dataset.fingerprint()
        npy = self.path(dataset, encoder_key, modality, fp)
        return self._valid_manifest(npy, encoder_key, modality, fp)

    def entries(self) -> list[Manifest]:
        """Manifests of every complete entry under ``root`` (sorted by dataset, then file)."""
        out = []
        for path in sorted(self.root.glob("*/*.json")):
            if path.name.endswith(".progress.json"):
                continue
            try:
                out.append(read_manifest(path))
            except BadInputError:
                _log.warning("skipping unreadable feature manifest %s", path)
        return out

    def _valid_manifest(
        self, npy: Path, encoder_key: str, modality: str, fingerprint: str
    ) -> Manifest | None:
        manifest_path = npy.with_suffix(".json")
        if not (npy.is_file() and manifest_path.is_file()):
            return None
        try:
            m = read_manifest(manifest_path)
            arr = np.load(npy, mmap_mode="r")
        except (BadInputError, OSError, ValueError) as e:
            _log.warning("ignoring broken cache entry %s (%s)", npy, e)
            return None
        expected = (encoder_key, modality, fingerprint, FORMAT, (m.rows, m.dim), m.dtype)
        found = (m.encoder, m.modality, m.dataset_fingerprint, m.format, arr.shape, arr.dtype.name)
        if expected != found:
            _log.warning("ignoring stale cache entry %s (manifest does not match)", npy)
            return None
        return m

    def get_or_encode(
        self,
        dataset: Dataset,
        *,
        modality: Modality | None = None,
        image_encoder: ImageEncoder | str | None = None,
        text_encoder: TextEncoder | str | None = None,
        batch_size: int = 64,
        chunk_size: int = 1024,
        num_workers: int | None = None,
        progress: bool = True,
        device: str | torch.device | None = None,
    ) -> np.ndarray:
        """Features of ``dataset`` for one modality: from the cache, else encoded and cached.

        Image rows follow ``dataset.records``; text rows follow ``dataset.captions()`` (one row per
        caption). The result is a read-only ``np.load(..., mmap_mode="r")`` array of float32.
        Precomputed features (a ``precomputed`` encoder, or no encoder for a dataset that carries
        ``image_features``/``text_features``) are returned as they are, without touching disk.

        Args:
            dataset: The collection to encode.
            modality: ``"image"`` or ``"text"``; inferred when exactly one encoder is given.
            image_encoder: Encoder instance or registered name, for ``modality="image"``.
            text_encoder: Encoder instance or registered name, for ``modality="text"``; one that
                ``needs_fit`` must already be fitted.
            batch_size: Images (or texts) per forward pass (capped at ``chunk_size``).
            chunk_size: Rows between durable commits (the most work an interrupt can lose).
            num_workers: Image decoding workers (default ``min(4, cpu count)``).
            progress: Show progress bars.
            device: Device for encoders given by name.

        Raises:
            ValueError: bad arguments, an unfitted text encoder, or records without images.
            BadInputError: an image file is missing or unreadable (named in the message).
        """
        modality = _infer_modality(modality, image_encoder, text_encoder)
        encoder = image_encoder if modality == "image" else text_encoder
        if encoder is None:
            own = dataset.image_features if modality == "image" else dataset.text_features
            if own is None:
                raise ValueError(
                    f"dataset {dataset.name!r} has no precomputed {modality} features; "
                    f"pass {modality}_encoder="
                )
            return own
        if isinstance(encoder, str):
            build = get_image_encoder if modality == "image" else get_text_encoder
            encoder = build(encoder, device=device)
        if not encoder.can_encode:  # precomputed rows: handed over, not cached
            rows = getattr(encoder, "features", None)
            if rows is None:
                raise ValueError(f"{modality} encoder {encoder.name!r} cannot encode {modality}s")
            return rows(dataset)
        if modality == "image" and not isinstance(encoder, ImageEncoder):
            raise ValueError(f"image_encoder must be an ImageEncoder, got {type(encoder).__name__}")
        if modality == "text" and not isinstance(encoder, TextEncoder):
            raise ValueError(f"text_encoder must be a TextEncoder, got {type(encoder).__name__}")
        if isinstance(encoder, TextEncoder) and not encoder.is_fitted:
            raise ValueError(
                f"text encoder {encoder.name!r} must be fitted (on training texts) before encoding"
            )
        if batch_size < 1 or chunk_size < 1:
            raise ValueError(
                f"batch_size and chunk_size must be >= 1, got {batch_size}, {chunk_size}"
            )

        fingerprint = dataset.fingerprint()
        npy = self.path(dataset, encoder.key, modality, fingerprint)
        if self.get(dataset, encoder.key, modality, fingerprint) is not None:
            return np.load(npy, mmap_mode="r")
        npy.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(npy.with_suffix(".lock")):
            manifest = self._valid_manifest(npy, encoder.key, modality, fingerprint)
            stale = None if manifest is None else self.stale_rows(dataset, npy, manifest, modality)
            if stale is not None and stale.size == 0:  # filled meanwhile
                return np.load(npy, mmap_mode="r")
            if stale is not None and stale.size < len(dataset):
                assert isinstance(encoder, ImageEncoder) and manifest is not None
                self._update_rows(
                    dataset, encoder, npy, manifest, stale,
                    batch_size=batch_size, num_workers=num_workers, progress=progress,
                )  # fmt: skip
                return np.load(npy, mmap_mode="r")
            if isinstance(encoder, ConcatImageEncoder) and self._assemble(
                dataset, encoder, npy, fingerprint
            ):
                return np.load(npy, mmap_mode="r")
            self._encode(
                dataset,
                encoder,
                modality,
                npy,
                fingerprint,
                batch_size=min(batch_size, chunk_size),
                chunk_size=chunk_size,
                num_workers=num_workers,
                progress=progress,
            )
        return np.load(npy, mmap_mode="r")

    def _encode(
        self,
        dataset: Dataset,
        encoder: ImageEncoder | TextEncoder,
        modality: Modality,
        npy: Path,
        fingerprint: str,
        *,
        batch_size: int,
        chunk_size: int,
        num_workers: int | None,
        progress: bool,
    ) -> None:
        start_time = time.perf_counter()
        if isinstance(encoder, ImageEncoder):
            inputs: list = image_paths(dataset)
        else:
            inputs = text_rows(dataset)[0]
        identity = {"encoder": encoder.key, "dataset_fingerprint": fingerprint, "format": FORMAT}
        out = PartialArray(npy, rows=len(inputs), dim=encoder.dim, identity=identity)
        digests = None
        if isinstance(encoder, ImageEncoder):
            digests = PartialArray(
                digests_path(npy), len(inputs), DIGEST_SIZE, identity, dtype="uint8"
            )
            out.rewind(min(out.resumed_from, digests.resumed_from))
            digests.rewind(out.resumed_from)
        if out.resumed_from:
            _log.info("%s: resuming at row %d of %d", npy.name, out.resumed_from, len(inputs))
        desc = f"{encoder.name} ({dataset.name}, {modality})"
        if out.resumed_from:
            desc += f", resumed at {out.resumed_from}"
        remaining = inputs[out.resumed_from :]
        if isinstance(encoder, ImageEncoder):
            assert digests is not None
            blocks = iter_image_rows(
                encoder, remaining, batch_size, num_workers, progress=progress, desc=desc
            )
            for block, block_digests in blocks:
                out.write(block)
                digests.write(block_digests)
                if out.uncommitted >= chunk_size:
                    digests.commit()  # first: committed feature rows always have digests
                    out.commit()
        else:
            bar = tqdm(
                total=len(inputs),
                initial=out.resumed_from,
                unit="text",
                desc=desc,
                disable=not progress,
            )
            with bar:
                for start in range(0, len(remaining), chunk_size):
                    chunk = remaining[start : start + chunk_size]
                    out.write(encoder.encode(chunk, batch_size=batch_size, progress=False))
                    out.commit()
                    bar.update(len(chunk))
        if digests is not None:
            digests.finish()
        out.finish()
        write_manifest(
            npy, encoder, modality, dataset, fingerprint, len(inputs), encoder.dim,
            time.perf_counter() - start_time, out.resumed_from,
        )  # fmt: skip

    def _assemble(
        self, dataset: Dataset, encoder: ConcatImageEncoder, npy: Path, fingerprint: str
    ) -> bool:
        """Write a concatenation's entry from its parts' valid entries, without encoding.

        Each part's rows are scaled to unit length and joined, as
        :meth:`ConcatImageEncoder.forward` does; the row digests are the first part's (the same
        image files). Returns ``False`` (nothing written) unless every part is cached.
        """
        start_time = time.perf_counter()
        first, *others = encoder.parts
        head = self.get(dataset, first.key, "image", fingerprint)  # hashes every image once
        digests = read_digests(self.path(dataset, first.key, "image", fingerprint), len(dataset))
        if head is None or digests is None:
            return False
        parts = [head]
        for part in others:  # fresh iff encoded from the same bytes: compare, do not re-hash
            part_npy = self.path(dataset, part.key, "image", fingerprint)
            if self._valid_manifest(part_npy, part.key, "image", fingerprint) is None:
                return False
            recorded = read_digests(part_npy, len(dataset))
            if recorded is None or not np.array_equal(recorded, digests):
                return False
            parts.append(np.load(part_npy, mmap_mode="r"))
        rows = len(dataset)
        _log.info("%s: joining the cached features of %s", npy.name, encoder.name)

        def write(tmp: Path) -> None:
            out = np.lib.format.open_memmap(tmp, "w+", np.float32, (rows, encoder.dim))
            for start in range(0, rows, _ASSEMBLE_ROWS):
                block = slice(start, start + _ASSEMBLE_ROWS)
                joined = [F.normalize(torch.from_numpy(np.array(a[block])), dim=1) for a in parts]
                out[block] = torch.cat(joined, dim=1).numpy()
            out.flush()
            del out

        atomic_write(npy, write)
        write_digests(npy, digests)
        for leftover in partial_paths(npy):  # an interrupted encode of the same entry
            leftover.unlink(missing_ok=True)
        write_manifest(
            npy, encoder, "image", dataset, fingerprint, rows, encoder.dim,
            time.perf_counter() - start_time,
        )  # fmt: skip
        return True

    def _update_rows(
        self,
        dataset: Dataset,
        encoder: ImageEncoder,
        npy: Path,
        manifest: Manifest,
        rows: np.ndarray,
        *,
        batch_size: int,
        num_workers: int | None,
        progress: bool,
    ) -> None:
        """Encode ``rows`` again (their images changed) into a copy of the entry, then swap it in.

        The new array, then its digests, then the manifest are each replaced atomically; a crash
        between them leaves rows that are found stale (and encoded again) on next use, never
        stale rows handed out.
        """
        start_time = time.perf_counter()
        paths = image_paths(dataset)
        recorded = read_digests(npy, manifest.rows)
        digests = np.zeros((manifest.rows, DIGEST_SIZE), np.uint8) if recorded is None else recorded
        _log.info("%s: encoding %d changed image(s) again", npy.name, len(rows))
        desc = f"{encoder.name} ({dataset.name}, {len(rows)} changed images)"
        blocks = iter_image_rows(
            encoder, [paths[i] for i in rows], batch_size, num_workers, progress=progress, desc=desc
        )

        def write(tmp: Path) -> None:
            shutil.copyfile(npy, tmp)
            arr = np.lib.format.open_memmap(tmp, mode="r+")
            done = 0
            for block, block_digests in blocks:
                idx = rows[done : done + len(block)]
                arr[idx], digests[idx] = block, block_digests
                done += len(block)
            arr.flush()
            del arr

        atomic_write(npy, write)
        write_digests(npy, digests)
        write_manifest(
            npy, encoder, "image", dataset, manifest.dataset_fingerprint, manifest.rows,
            manifest.dim, time.perf_counter() - start_time,
        )  # fmt: skip


def _check_modality(modality: str) -> None:
    if modality not in ("image", "text"):
        raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")


def _infer_modality(
    modality: str | None, image_encoder: object | None, text_encoder: object | None
) -> Modality:
    if modality is None:
        if image_encoder is not None and text_encoder is None:
            return "image"
        if text_encoder is not None and image_encoder is None:
            return "text"
        raise ValueError(
            "pass modality='image' or 'text' (or exactly one of image_encoder/text_encoder)"
        )
    _check_modality(modality)
    return modality  # type: ignore[return-value]

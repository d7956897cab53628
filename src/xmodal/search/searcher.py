"""Query an index across modalities: :class:`Searcher`.

::

    from xmodal.search import Searcher

    with Searcher("indexes/emoji") as searcher:
        for r in searcher.text_to_image("a smiling cat", k=5):
            print(r.rank, r.id, r.score, r.image)
        searcher.image_to_text("photo.jpg", k=3, mode="two-stage", candidates=1000)
        searcher.text_to_image(["a dog", "a cat"], k=10, labels=["animal"])  # a batch

Queries are texts, image paths or PIL images (encoded with the index's own model: the run's
encoders and heads, or the zero-shot dual encoder), or precomputed joint-space embeddings
(``np.ndarray``, ``[d]`` or ``[n, d]``). Modes:

* ``float`` — the float index (exact inner product for flat, approximate for HNSW / IVF-PQ).
* ``hamming`` — the binary index; score = minus the Hamming distance, ties by insertion order.
* ``two-stage`` — ``candidates`` Hamming neighbours re-ranked by the exact inner product.

An index built from a run trained with query-bank normalisation (``query_bank_beta``, e.g. the
``cca-flickr8k-concat-qb`` preset) carries the run's bank: its cross-modal searches
(text→image, image→text) in ``float`` and ``two-stage`` mode rank by the normalised score
``cos + bias(row)`` (:mod:`xmodal.querybank`), as the run was validated and evaluated, and report
that score; same-modality and ``hamming`` searches keep the plain score.

A ``Searcher`` reads one index version (a snapshot); :meth:`Searcher.refresh` moves it to the
newest one. Searches are thread-safe and never see a half-written version.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
from PIL import Image

from xmodal.evaluation import pack_codes
from xmodal.index.closing import Closing
from xmodal.index.manifest import read_pointer
from xmodal.index.snapshot import Snapshot
from xmodal.querybank import QUERY_BANK_FILE, QueryBank, load_query_bank
from xmodal.search.engine import MODES, Mode, RowBias, search_collection
from xmodal.search.results import Hits, Result

if TYPE_CHECKING:
    from xmodal.index.embedders import Embedded, IndexModel

__all__ = ["ImageQuery", "Searcher"]

#: An image query: a file path or an in-memory PIL image.
ImageQuery = str | Path | Image.Image
Target = Literal["image", "text"]
TextQuery = str | Sequence[str] | np.ndarray
ImageQueries = ImageQuery | Sequence[ImageQuery] | np.ndarray


def check_query_modality(query_modality: object) -> None:
    """Raise ``ValueError`` unless ``query_modality`` is ``None``, ``image`` or ``text``."""
    if query_modality not in (None, "image", "text"):
        raise ValueError(f"query_modality must be 'image' or 'text', got {query_modality!r}")


class _RowBiases:
    """A collection's query-bank biases by row position, each computed on first use from the
    stored row (a pure function of it), then kept: a row's bias costs one pass over the bank
    once, not once per query. Concurrent fills write the same values."""

    def __init__(self, vectors: np.ndarray, bias: Callable[[np.ndarray], np.ndarray]) -> None:
        self._vectors, self._bias = vectors, bias
        self._values = np.full(len(vectors), np.nan, dtype=np.float32)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        pos = np.maximum(np.asarray(positions, dtype=np.int64), 0)
        if len(self._values) == 0:
            return np.zeros(len(pos), dtype=np.float32)
        missing = np.unique(pos[np.isnan(self._values[pos])])
        if len(missing):
            rows = np.asarray(self._vectors[missing], dtype=np.float32)
            self._values[missing] = self._bias(rows)
        return self._values[pos]


class Searcher(Closing):
    """Search an index built by :func:`xmodal.index.build_index` (or ``xmodal index build``).

    Args:
        index_dir: The index folder.
        mmap: Memory-map the indexes (default) instead of reading them into memory.
        verify: Check every file's SHA-256 when opening a version.
        device: Where query encoders run (``cpu``, ``cuda``, ``None`` = auto).

    Raises:
        IndexFormatError: not an index, or a corrupt or inconsistent one.
    """

    def __init__(
        self,
        index_dir: str | Path,
        *,
        mmap: bool = True,
        verify: bool = True,
        device: str | None = None,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.mmap, self.verify, self.device = mmap, verify, device
        self._snapshot = Snapshot.open(self.index_dir, mmap=mmap, verify=verify)
        self._model: tuple[dict[str, Any], IndexModel] | None = None
        self._bank: tuple[int, QueryBank | None] | None = None
        self._biases: dict[tuple[int, str], _RowBiases] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        s = self._snapshot
        return (
            f"Searcher({str(self.index_dir)!r}, version={s.version}, images={len(s.collections['image'])}, "
            f"texts={len(s.collections['text'])}, dim={s.dim}, bits={s.bits})"
        )

    # --- versions ------------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        """The index version searches read."""
        return self._snapshot

    def refresh(self) -> bool:
        """Move to the newest committed version; ``True`` when it changed."""
        if read_pointer(self.index_dir).version == self._snapshot.version:
            return False
        with self._lock:
            fresh = Snapshot.open(self.index_dir, mmap=self.mmap, verify=self.verify)
            changed = fresh.version != self._snapshot.version
            self._snapshot = fresh  # searches in flight keep the old object
        return changed

    def close(self) -> None:
        """Release the metadata connection."""
        self._snapshot.close()

    # --- encoding ------------------------------------------------------------------------------
    def model(self) -> IndexModel:
        """The index's model (loaded on first use)."""
        from xmodal.index.embedders import load_model  # imports torch

        for attempt in range(2):
            snap = self._snapshot
            try:
                with self._lock:
                    if self._model is None or self._model[0] != snap.manifest.model:
                        model = load_model(snap.manifest.model, snap.folder, self.device)
                        self._model = (snap.manifest.model, model)
                    return self._model[1]
            except FileNotFoundError:
                if attempt:  # pragma: no cover - the model files are really missing
                    raise
                self.refresh()  # this version was replaced and collected: use the current one
        raise AssertionError("unreachable")  # pragma: no cover

    def embed_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors [n, d], packed codes [n, bits / 8])`` of texts, as the index encodes them."""
        return self._vectors_and_codes(self.model().embed_texts(texts), self._snapshot)

    def embed_images(self, images: Sequence[ImageQuery]) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors, packed codes)`` of image files or PIL images."""
        return self._vectors_and_codes(self.model().embed_images(images), self._snapshot)

    def _vectors_and_codes(self, emb: Embedded, snap: Snapshot) -> tuple[np.ndarray, np.ndarray]:
        if emb.head_codes is not None and snap.manifest.codes.get("source") == "head":
            return emb.vectors, pack_codes(emb.head_codes)
        return emb.vectors, self._codes_from_vectors(emb.vectors, snap)

    def _codes_from_vectors(self, vectors: np.ndarray, snap: Snapshot) -> np.ndarray:
        if snap.rotation is None:
            raise ValueError(
                "this index's codes come from the method's hash head, which reads encoder "
                "features, not embeddings: pass codes= with the vectors, or query with text / images"
            )
        return pack_codes(snap.rotation.encode(vectors))

    def query_bank(self) -> QueryBank | None:
        """The query bank of the run the index was built from (``None`` when it has none)."""
        snap = self._snapshot
        cached = self._bank
        if cached is not None and cached[0] == snap.version:
            return cached[1]
        spec = snap.manifest.model
        path = snap.folder / str(spec.get("dir", "model")) / QUERY_BANK_FILE
        bank = load_query_bank(path) if spec.get("kind") == "run" and path.is_file() else None
        self._bank = (snap.version, bank)
        return bank

    def _bias(self, query_modality: Target | None, target: Target) -> RowBias | None:
        if query_modality is None or query_modality == target:
            return None
        bank = self.query_bank()
        if bank is None:
            return None
        snap = self._snapshot
        key = (snap.version, target)
        biases = self._biases.get(key)
        if biases is None:
            fn = bank.image_bias if target == "image" else bank.text_bias
            biases = _RowBiases(snap.collections[target].vectors, fn)
            kept = {k: v for k, v in self._biases.items() if k[0] == snap.version}
            self._biases = {**kept, key: biases}  # older versions' biases are dropped
        return biases

    # --- search --------------------------------------------------------------------------------
    def search(
        self,
        target: Target,
        *,
        vectors: np.ndarray | None = None,
        codes: np.ndarray | None = None,
        k: int = 10,
        mode: Mode = "float",
        labels: str | Sequence[str] | None = None,
        candidates: int = 1000,
        query_modality: Target | None = None,
    ) -> Hits:
        """Search ``target`` rows with precomputed query embeddings and/or codes.

        Args:
            target: ``image`` (one row per item) or ``text`` (one row per caption).
            vectors: ``[n, d]`` (or ``[d]``) query embeddings; needed by ``float`` and
                ``two-stage`` (and turned into codes when ``codes`` is not given and the index
                uses a rotation).
            codes: ``[n, bits / 8]`` packed uint8 or ``[n, bits]`` ``{-1, +1}`` query codes.
            k: Results per query.
            mode: ``float``, ``hamming`` or ``two-stage``.
            labels: Only rows whose item carries any of these labels.
            candidates: Hamming candidates re-ranked in ``two-stage`` mode.
            query_modality: What the queries embed (``image`` or ``text``); a cross-modal
                search of an index with a query bank then ranks by the normalised score (see
                the module docstring). ``None``: the plain score.

        Raises:
            ValueError: a bad argument, or vectors / codes of the wrong size.
        """
        snap = self._snapshot
        if target not in ("image", "text"):
            raise ValueError(f"target must be 'image' or 'text', got {target!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        if not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        check_query_modality(query_modality)
        q_vectors = self._check_vectors(vectors, snap) if vectors is not None else None
        q_codes = self._check_codes(codes, snap) if codes is not None else None
        if mode in ("float", "two-stage") and q_vectors is None:
            raise ValueError(f"mode {mode!r} needs query vectors")
        if mode in ("hamming", "two-stage") and q_codes is None:
            if q_vectors is None:
                raise ValueError("mode 'hamming' needs query codes or vectors")
            q_codes = self._codes_from_vectors(q_vectors, snap)
        if q_vectors is not None:
            n_queries = len(q_vectors)
        elif q_codes is not None:
            n_queries = len(q_codes)
        else:
            raise ValueError("give query vectors or codes")
        if q_vectors is not None and q_codes is not None and len(q_codes) != n_queries:
            raise ValueError(f"{n_queries} query vectors but {len(q_codes)} query codes")
        col = snap.collections[target]
        allowed = self._allowed(snap, target, labels)
        pos, scores, dist = search_collection(
            col,
            mode,
            int(k),
            vectors=q_vectors,
            codes=q_codes,
            allowed=allowed,
            candidates=candidates,
            bias=self._bias(query_modality, target) if mode != "hamming" else None,
        )
        ids = np.where(pos >= 0, col.ids[np.maximum(pos, 0)] if len(col) else -1, -1)
        return Hits(target, mode, ids, scores, dist, snap)

    @staticmethod
    def _check_vectors(vectors: np.ndarray, snap: Snapshot) -> np.ndarray:
        v = np.asarray(vectors)
        if v.ndim == 1:
            v = v[None, :]
        if v.ndim != 2 or v.shape[1] != snap.dim or not np.issubdtype(v.dtype, np.floating):
            raise ValueError(
                f"query vectors must be float [n, {snap.dim}] (or [{snap.dim}]), got {v.dtype} {np.shape(vectors)}"
            )
        if not np.isfinite(v).all():
            raise ValueError("query vectors contain NaN or infinity")
        return np.ascontiguousarray(v, dtype=np.float32)

    @staticmethod
    def _check_codes(codes: np.ndarray, snap: Snapshot) -> np.ndarray:
        c = np.asarray(codes)
        if c.ndim == 1:
            c = c[None, :]
        n_bytes = snap.bits // 8
        if c.dtype == np.uint8 and c.ndim == 2 and c.shape[1] == n_bytes:
            return np.ascontiguousarray(c)
        if c.ndim == 2 and c.shape[1] == snap.bits:
            return pack_codes(c)
        raise ValueError(
            f"query codes must be packed uint8 [n, {n_bytes}] or [n, {snap.bits}] {{-1, +1}}, "
            f"got {c.dtype} {np.shape(codes)}"
        )

    @staticmethod
    def _allowed(
        snap: Snapshot, target: str, labels: str | Sequence[str] | None
    ) -> np.ndarray | None:
        if labels is None:
            return None
        wanted = [labels] if isinstance(labels, str) else list(labels)
        if not wanted or not all(isinstance(x, str) for x in wanted):
            raise ValueError(
                f"labels must be a label or a non-empty list of labels, got {labels!r}"
            )
        col = snap.collections[target]
        ids = (
            snap.meta.items_with_labels(wanted)
            if target == "image"
            else snap.meta.texts_with_labels(wanted)
        )
        return col.positions(ids)

    # --- the four directions -------------------------------------------------------------------
    def _run(
        self,
        query_modality: Target,
        target: Target,
        query: Any,
        k: int,
        labels: Any,
        mode: Mode,
        candidates: int,
    ) -> list[Result] | list[list[Result]]:
        single, vectors, codes = self._encode_query(query_modality, query)
        hits = self.search(
            target,
            vectors=vectors,
            codes=codes,
            k=k,
            mode=mode,
            labels=labels,
            candidates=candidates,
            query_modality=query_modality,
        )
        results = hits.results()
        return results[0] if single else results

    def _encode_query(
        self, modality: str, query: Any
    ) -> tuple[bool, np.ndarray, np.ndarray | None]:
        if isinstance(query, np.ndarray):
            if query.ndim not in (1, 2):
                raise ValueError(f"vector queries must be [d] or [n, d], got shape {query.shape}")
            return query.ndim == 1, query, None
        if modality == "text":
            single = isinstance(query, str)
            texts = [query] if single else list(query)
            if not texts:
                raise ValueError("no queries given")
            vectors, codes = self.embed_texts(texts)
            return single, vectors, codes
        single = isinstance(query, str | Path | Image.Image)
        images = [query] if single else list(query)
        if not images:
            raise ValueError("no queries given")
        vectors, codes = self.embed_images(images)
        return single, vectors, codes

    @overload
    def text_to_image(
        self,
        query: str,
        k: int = ...,
        *,
        labels: Any = ...,
        mode: Mode = ...,
        candidates: int = ...,
    ) -> list[Result]: ...
    @overload
    def text_to_image(
        self,
        query: Sequence[str] | np.ndarray,
        k: int = ...,
        *,
        labels: Any = ...,
        mode: Mode = ...,
        candidates: int = ...,
    ) -> Any: ...
    def text_to_image(
        self,
        query: TextQuery,
        k: int = 10,
        *,
        labels: str | Sequence[str] | None = None,
        mode: Mode = "float",
        candidates: int = 1000,
    ) -> Any:
        """Images for a text (``str``: one list of results; a list of texts or ``[n, d]``
        vectors: one list per query)."""
        return self._run("text", "image", query, k, labels, mode, candidates)

    @overload
    def text_to_text(
        self,
        query: str,
        k: int = ...,
        *,
        labels: Any = ...,
        mode: Mode = ...,
        candidates: int = ...,
    ) -> list[Result]: ...
    @overload
    def text_to_text(
        self,
        query: Sequence[str] | np.ndarray,
        k: int = ...,
        *,
        labels: Any = ...,
        mode: Mode = ...,
        candidates: int = ...,
    ) -> Any: ...
    def text_to_text(
        self,
        query: TextQuery,
        k: int = 10,
        *,
        labels: str | Sequence[str] | None = None,
        mode: Mode = "float",
        candidates: int = 1000,
    ) -> Any:
        """Captions for a text."""
        return self._run("text", "text", query, k, labels, mode, candidates)

    @overload
    def image_to_text(
        self,
        query: ImageQuery,
        k: int = ...,
        *,
        labels: Any = ...,
        mode: Mode = ...,
        candidates: int = ...,
    ) -> list[Result]: ...
    @overload
    def image_to_text(
        self,
        query: Sequence[ImageQuery] | np.ndarray,
        k: int = ...,
        *,
        labels: Any = ...,
        mode: Mode = ...,
        candidates: int = ...,
    ) -> Any: ...
    def image_to_text(
        self,
        query: ImageQueries,
        k: int = 10,
        *,
        labels: str | Sequence[str] | None = None,
        mode: Mode = "float",
        candidates: int = 1000,
    ) -> Any:
        """Captions for an image (path or PIL image; a list of them for a batch)."""
        return self._run("image", "text", query, k, labels, mode, candidates)

    @overload
    def image_to_image(
        self,
        query: ImageQuery,
        k: int = ...,
        *,
        labels: Any = ...,
        mode: Mode = ...,
        candidates: int = ...,
    ) -> list[Result]: ...
    @overload
    def image_to_image(
        self,
        query: Sequence[ImageQuery] | np.ndarray,
        k: int = ...,
        *,
        labels: Any = ...,
        mode: Mode = ...,
        candidates: int = ...,
    ) -> Any: ...
    def image_to_image(
        self,
        query: ImageQueries,
        k: int = 10,
        *,
        labels: str | Sequence[str] | None = None,
        mode: Mode = "float",
        candidates: int = 1000,
    ) -> Any:
        """Images for an image."""
        return self._run("image", "image", query, k, labels, mode, candidates)

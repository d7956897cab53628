"""What the HTTP app does, without HTTP: search, look up, add and delete items of one index.

Every method raises :class:`~xmodal.serve.limits.RequestProblem` (status + message) for a request
it refuses. Searches run concurrently on the :class:`~xmodal.search.Searcher`'s current snapshot;
writes are serialised by a lock (and by the index's own writer lock across processes), publish a
new index version atomically and move the searcher to it.

Uploaded images are stored once per content (``INDEX_DIR/uploads/<sha256>.png``, shared by every
item added with the same bytes). Deleting an item removes its stored upload once no item of the
committed version references it any more: the file is removed *after* the new version commits,
so a crash in between leaves an orphan file, never an item without its image. Adds and these
removals take turns on ``INDEX_DIR/.uploads.lock`` (across processes too), so a removal never
races an add that reuses the same file. Uploads kept in a custom ``upload_dir`` (which other
indexes may share) are never removed.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from xmodal.datasets.images import ImageLimits
from xmodal.datasets.record import Record
from xmodal.index import EncodedItems, IndexFormatError, append_items, delete_items
from xmodal.index.metadata import ItemMeta
from xmodal.io import exclusive_lock
from xmodal.search import Mode, Searcher
from xmodal.search.searcher import Target
from xmodal.serve.images import ImageDecoder, servable, store_image
from xmodal.serve.limits import Limits, RequestProblem, check_item_id
from xmodal.serve.pool import EncodePool

__all__ = ["UPLOADS_LOCK", "Service"]

#: Name of a stored upload: the SHA-256 of its bytes (see :func:`~xmodal.serve.images.store_image`).
_UPLOAD_NAME = re.compile(r"^[0-9a-f]{64}\.png$")
#: Lock file (in the index folder) that adds and upload removals take turns on.
UPLOADS_LOCK = ".uploads.lock"


def item_path(item_id: str) -> str:
    """URL path of an item (each id segment percent-encoded)."""
    return "/items/" + quote(item_id, safe="/")


class Service:
    """One index, served.

    Args:
        index_dir: The index folder.
        token: Bearer token that write requests must carry; ``None``: read-only service.
        limits: Request limits.
        upload_dir: Where uploaded images are stored (default ``INDEX_DIR/uploads``).
        device: Where query encoders run.
        verify: Check file checksums whenever a version is opened.
        refresh_every: Seconds between checks for versions written by other processes.
    """

    def __init__(
        self,
        index_dir: str | Path,
        *,
        token: str | None = None,
        limits: Limits | None = None,
        upload_dir: str | Path | None = None,
        device: str | None = None,
        verify: bool = True,
        refresh_every: float = 1.0,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.limits = limits or Limits()
        self.token = token or None
        self.upload_dir = Path(upload_dir) if upload_dir else self.index_dir / "uploads"
        #: Stored uploads are removed with their last item only in the index's own folder.
        self.owns_uploads = upload_dir is None
        self.searcher = Searcher(self.index_dir, device=device, verify=verify)
        self.decoder = ImageDecoder(self.limits.image_limits(), self.limits.max_concurrent_decodes)
        self.pool = EncodePool(
            self.limits.max_concurrent_encodes,
            self.limits.max_queued_encodes,
            self.limits.encode_timeout_s,
        )
        self._upload_limits: ImageLimits | None = None
        self.refresh_every = refresh_every
        self._checked = time.monotonic()
        self._write_lock = threading.Lock()

    # --- state -----------------------------------------------------------------------------
    @property
    def read_only(self) -> bool:
        return self.token is None

    def stats(self) -> tuple[int, int, int]:
        """``(items, texts, version)`` of the snapshot searched."""
        snap = self.searcher.snapshot
        return len(snap.collections["image"]), len(snap.collections["text"]), snap.version

    def health(self) -> dict[str, Any]:
        snap = self._fresh()
        items, texts, version = self.stats()
        return {
            "status": "ok",
            "version": version,
            "items": items,
            "texts": texts,
            "dim": snap.dim,
            "bits": snap.bits,
            "model": str(snap.manifest.model.get("kind")),
            "read_only": self.read_only,
            "limits": dict(self.limits.__dict__),
        }

    def preload(self) -> None:
        """Load the query encoders now rather than on the first query (no-op without a model)."""
        if self.searcher.snapshot.manifest.model.get("kind") not in (None, "none"):
            self.searcher.model()

    def _fresh(self) -> Any:
        """The current snapshot, after picking up versions other processes wrote (at most once
        per ``refresh_every`` seconds)."""
        now = time.monotonic()
        if now - self._checked >= self.refresh_every:
            self._checked = now
            with contextlib.suppress(IndexFormatError, OSError):  # keep the version we have
                self.searcher.refresh()
        return self.searcher.snapshot

    # --- auth ------------------------------------------------------------------------------
    def authorize(self, authorization: str | None) -> None:
        """Check an ``Authorization`` header for write access (403 read-only / 401 / 403)."""
        if self.token is None:
            raise RequestProblem(
                403, "this service is read-only: it was started without a write token"
            )
        challenge = {"WWW-Authenticate": 'Bearer realm="xmodal"'}
        if not authorization:
            raise RequestProblem(401, "missing bearer token (Authorization: Bearer ...)", challenge)
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise RequestProblem(401, "Authorization header must be 'Bearer <token>'", challenge)
        if not hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), self.token.encode("utf-8")
        ):
            raise RequestProblem(403, "wrong bearer token")

    # --- reading ---------------------------------------------------------------------------
    def _result(self, r: Any) -> dict[str, Any]:
        d = r.to_dict()
        d.pop("image", None)  # server paths stay on the server
        d.update(self._urls(r.id, r.image))
        return d

    def _urls(self, item_id: str, image: str | None) -> dict[str, str | None]:
        if not image:
            return {"image_url": None, "thumbnail_url": None}
        url = item_path(item_id) + "/image"
        return {"image_url": url, "thumbnail_url": url + "?size=160"}

    def _meta(self, snap: Any, item_id: str) -> ItemMeta:
        check_item_id(item_id, self.limits)
        found = snap.meta.ids_of_keys([item_id])
        if item_id not in found:
            raise RequestProblem(404, f"no item with id {item_id!r} in the index")
        return snap.meta.items([found[item_id]])[found[item_id]]

    def item(self, item_id: str) -> dict[str, Any]:
        """Metadata of one item."""
        meta = self._meta(self._fresh(), item_id)
        return {
            "id": meta.key,
            "captions": list(meta.captions),
            "labels": list(meta.labels),
            "extra": meta.extra,
            **self._urls(meta.key, meta.path),
        }

    def image_file(self, item_id: str) -> Path:
        """The image file of an item: the path the index's metadata holds, nothing else."""
        meta = self._meta(self._fresh(), item_id)
        path = servable(meta.path)
        if path is None:
            raise RequestProblem(404, f"item {item_id!r} has no image file")
        return path

    def thumbnail(self, item_id: str, size: int) -> bytes:
        """PNG thumbnail of an item's image, at most ``size`` pixels a side."""
        path = self.image_file(item_id)
        try:
            return self.decoder.thumbnail(path, size)
        except ValueError as e:  # BadInputError: the stored file is unreadable
            raise RequestProblem(404, f"item {item_id!r}: image unreadable ({e})") from e

    # --- images ----------------------------------------------------------------------------
    def upload_limits(self) -> ImageLimits:
        """Decoded-cost limits of uploads: :class:`Limits`, with the shorter side that the
        index's image encoder resizes to (256 when it does not say)."""
        if self._upload_limits is None:
            resize = 256
            with contextlib.suppress(Exception):  # no model, or one without a plain resize
                model = self.searcher.model()
                transform = getattr(getattr(model, "image_encoder", None), "transform", None)
                resize = int(getattr(transform, "resize", resize))
            self._upload_limits = self.limits.image_limits(resize)
        return self._upload_limits

    def _embed_upload(self, data: bytes) -> tuple[Image.Image, np.ndarray, np.ndarray]:
        """Decode and encode an upload (runs on the pool): ``(image, vectors, codes)``."""
        image = self.decoder.decode(data, self.upload_limits())
        vectors, codes = self.searcher.embed_images([image])
        return image, vectors, codes

    # --- searching -------------------------------------------------------------------------
    def _check_labels(self, labels: Sequence[str] | None) -> list[str] | None:
        if labels is None:
            return None
        lim = self.limits
        if not labels or len(labels) > lim.max_labels:
            raise RequestProblem(422, f"labels: give 1 to {lim.max_labels} labels")
        for label in labels:
            if not label or len(label) > lim.max_label_chars:
                raise RequestProblem(
                    422, f"labels: each label must have 1 to {lim.max_label_chars} characters"
                )
        return list(labels)

    def _respond(self, target: str, mode: str, k: int, run: Any) -> dict[str, Any]:
        start = time.perf_counter()
        version = self._fresh().version
        try:
            results = run()
        except IndexFormatError as e:
            raise RequestProblem(503, f"index unavailable: {e}") from e
        except ValueError as e:  # bad arguments, or an index without a query model
            raise RequestProblem(400, str(e)) from e
        return {
            "target": target,
            "mode": mode,
            "k": k,
            "version": version,
            "took_ms": round((time.perf_counter() - start) * 1000, 3),
            "results": [self._result(r) for r in results],
        }

    def search_text(
        self,
        query: str,
        *,
        k: int = 10,
        mode: Mode = "float",
        target: Target = "image",
        labels: Sequence[str] | None = None,
        candidates: int = 1000,
    ) -> dict[str, Any]:
        """Text → image (``target="image"``) or text → caption (``target="text"``)."""
        if len(query) > self.limits.max_query_chars or not query.strip():
            raise RequestProblem(
                422, f"query must have 1 to {self.limits.max_query_chars} characters"
            )
        labels = self._check_labels(labels)
        s = self.searcher
        fn = s.text_to_image if target == "image" else s.text_to_text
        return self._respond(
            target,
            mode,
            k,
            lambda: fn(query, k, labels=labels, mode=mode, candidates=candidates),
        )

    def search_image(
        self,
        *,
        data: bytes | None = None,
        item_id: str | None = None,
        k: int = 10,
        mode: Mode = "float",
        target: Target = "image",
        labels: Sequence[str] | None = None,
        candidates: int = 1000,
    ) -> dict[str, Any]:
        """Image → image or image → caption, for an uploaded image or an indexed item's image."""
        if (data is None) == (item_id is None):
            raise RequestProblem(400, "give either an image file (file) or an item id (id)")
        labels = self._check_labels(labels)
        if data is not None:
            self.decoder.check_header(data, self.upload_limits())  # refuse early, off the pool

            def query() -> tuple[np.ndarray, np.ndarray]:
                _, vectors, codes = self.pool.run(self._embed_upload, data)
                return vectors, codes
        else:
            assert item_id is not None  # one of the two is given (checked above)
            snap = self._fresh()
            meta = self._meta(snap, item_id)
            col = snap.collections["image"]
            pos = col.positions(np.asarray([meta.id]))

            def query() -> tuple[np.ndarray, np.ndarray]:
                return np.asarray(col.vectors[pos]), np.asarray(col.codes[pos])

        def run() -> list[Any]:
            vectors, codes = query()
            hits = self.searcher.search(
                target,
                vectors=vectors,
                codes=codes,
                k=k,
                mode=mode,
                labels=labels,
                candidates=candidates,
                query_modality="image",
            )
            return hits.results()[0]

        return self._respond(target, mode, k, run)

    # --- writing ---------------------------------------------------------------------------
    def add_item(
        self,
        item_id: str,
        data: bytes,
        captions: Sequence[str] = (),
        labels: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Encode an uploaded image (and captions) with the index's model and add it."""
        check_item_id(item_id, self.limits)
        lim = self.limits
        if len(captions) > lim.max_captions:
            raise RequestProblem(422, f"captions: at most {lim.max_captions} per item")
        for c in captions:
            if not c.strip() or len(c) > lim.max_caption_chars:
                raise RequestProblem(
                    422, f"captions: each caption must have 1 to {lim.max_caption_chars} characters"
                )
        if labels:
            self._check_labels(labels)
        self.decoder.check_header(data, self.upload_limits())
        with self._write_lock, _storage_problems(self.index_dir):
            self.searcher.refresh()
            snap = self.searcher.snapshot
            if snap.meta.ids_of_keys([item_id]):
                raise RequestProblem(409, f"an item with id {item_id!r} is already indexed")
            try:
                image, img_vec, img_codes = self.pool.run(self._embed_upload, data)
                if captions:
                    txt_vec, txt_codes = self.searcher.embed_texts(list(captions))
                else:
                    txt_vec = np.zeros((0, snap.dim), np.float32)
                    txt_codes = np.zeros((0, snap.bits // 8), np.uint8)
            except ValueError as e:  # an index without a model
                raise RequestProblem(400, str(e)) from e
            with self._uploads_lock():  # no removal of this file until the add commits
                path = store_image(image, self.upload_dir, data)
                record = Record(item_id, path, tuple(captions), tuple(labels), {"source": "upload"})
                items = EncodedItems(
                    [record], img_vec, img_codes, txt_vec, txt_codes,
                    np.zeros(len(captions), np.int64),
                )  # fmt: skip
                try:
                    append_items(
                        self.index_dir, items, on_exists="error", expect_model=snap.manifest.model
                    )
                except ValueError as e:  # another process added the id, or rebuilt the index
                    raise RequestProblem(409, str(e)) from e
            self.searcher.refresh()
            return self._written(item_id, "added")

    def delete_item(self, item_id: str) -> dict[str, Any]:
        """Remove an item (its image row and captions) from the index."""
        check_item_id(item_id, self.limits)
        with self._write_lock, _storage_problems(self.index_dir):
            self.searcher.refresh()
            meta = self._meta(self.searcher.snapshot, item_id)
            try:
                delete_items(self.index_dir, [item_id])
            except ValueError as e:  # deleted by another process meanwhile
                raise RequestProblem(404, str(e)) from e
            self.searcher.refresh()
            self._drop_upload(meta.path)  # after the commit: at worst an orphan file
            return self._written(item_id, "deleted")

    @contextlib.contextmanager
    def _uploads_lock(self) -> Iterator[None]:
        if not self.owns_uploads:
            yield
            return
        with exclusive_lock(self.index_dir / UPLOADS_LOCK):
            yield

    def _drop_upload(self, path: str | None) -> bool:
        """Remove a stored upload once no item of the committed version references it."""
        if not path or not self.owns_uploads:
            return False
        file = Path(path)
        if file.parent != self.upload_dir.resolve() or not _UPLOAD_NAME.match(file.name):
            return False  # not a stored upload (e.g. an image of the indexed data set)
        with self._uploads_lock():
            try:  # the latest version, other processes' adds included
                self.searcher.refresh()
                if self.searcher.snapshot.meta.has_path(path):
                    return False
            except (IndexFormatError, OSError, sqlite3.Error):
                return False  # keep the file when in doubt
            file.unlink(missing_ok=True)
        return True

    def _written(self, item_id: str, action: str) -> dict[str, Any]:
        items, _, version = self.stats()
        return {"id": item_id, "action": action, "version": version, "items": items}

    def close(self) -> None:
        self.pool.close()
        self.searcher.close()


#: ``errno`` values that mean the storage is full.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def _storage_problems(index_dir: Path) -> Iterator[None]:
    """OS errors of a write as answers: 507 when the disk is full, 500 naming the path
    otherwise; the index's previous version stays the committed one either way."""
    try:
        yield
    except sqlite3.OperationalError as e:  # the metadata database's own words for a full disk
        if "full" not in str(e):
            raise
        raise RequestProblem(
            507, f"insufficient storage: the index metadata could not be written ({e})"
        ) from e
    except OSError as e:
        where = e.filename or index_dir
        if e.errno in _FULL:
            raise RequestProblem(
                507,
                f"insufficient storage: no space left to write {where}; the index is unchanged",
            ) from e
        raise RequestProblem(
            500, f"could not write {where} ({e.strerror or e}); the index is unchanged"
        ) from e

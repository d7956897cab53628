"""Uploaded images: decode them safely, store them, make thumbnails of indexed ones.

Uploads are decoded with :func:`xmodal.datasets.images.load_image` (the decoded-cost limits of
:class:`~xmodal.datasets.images.ImageLimits` checked from the header before any pixel is decoded,
every decoding error caught); a semaphore bounds how many are decoded at once. Files are read only from paths the index's metadata holds, never from
paths a client sends.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import os
import threading
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from xmodal.datasets.images import (
    IMAGE_SUFFIXES,
    ImageLimits,
    cost_problem,
    decode_image,
    load_image,
    open_header,
)
from xmodal.errors import BadInputError
from xmodal.io import atomic_write
from xmodal.serve.limits import RequestProblem

__all__ = ["ImageDecoder", "media_type", "servable", "store_image"]


def media_type(path: Path) -> str:
    """The MIME type of an image file, by suffix."""
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class ImageDecoder:
    """Decodes client images within decoded-cost limits, at most ``slots`` at a time.

    Args:
        limits: Limits of stored images (thumbnails); uploads pass their own to :meth:`decode`
            (they depend on the index's encoder).
        slots: Images decoded at once.
    """

    def __init__(self, limits: ImageLimits, slots: int) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(slots)

    def check_header(
        self, data: bytes, limits: ImageLimits | None = None, what: str = "uploaded file"
    ) -> tuple[int, int]:
        """Size of the image in ``data`` from its header: 415 when it is no image, 413 naming
        the limit when decoding or resizing it would cost more than ``limits`` allow."""
        if not data:
            raise RequestProblem(400, f"{what} is empty")
        try:
            with open_header(io.BytesIO(data)) as im:
                size, problem = im.size, cost_problem(im, limits or self.limits)
        except Image.DecompressionBombError as e:
            raise RequestProblem(413, f"{what} is a decompression bomb ({e})") from e
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
            raise RequestProblem(
                415, f"{what} is not a readable image (PNG, JPEG, GIF, WebP, BMP, TIFF)"
            ) from e
        if problem is not None:
            raise RequestProblem(413, f"{what}: {problem}")
        return size

    def decode(
        self, data: bytes, limits: ImageLimits | None = None, what: str = "uploaded file"
    ) -> Image.Image:
        """8-bit RGB image of ``data`` (400 when the pixel data is corrupt or truncated)."""
        limits = limits or self.limits
        self.check_header(data, limits, what)
        with self._slots:
            try:
                return decode_image(data, limits)
            except BadInputError as e:
                raise RequestProblem(400, f"{what}: {e.reason}") from e

    def thumbnail(self, path: Path, size: int) -> bytes:
        """PNG bytes of the image at ``path`` scaled to fit ``size`` x ``size``."""
        with self._slots:
            image = load_image(path, self.limits)
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="PNG", optimize=False)
        return out.getvalue()


def store_image(image: Image.Image, folder: Path, data: bytes) -> Path:
    """Save a decoded upload as PNG in ``folder`` under the SHA-256 of its bytes (idempotent)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()}.png"
    if not path.is_file():
        atomic_write(path, lambda p: image.save(p, format="PNG"))
        os.chmod(path, 0o644)
    return path


def servable(path: str | None) -> Path | None:
    """The file at a metadata ``path`` when it is an existing regular image file, else ``None``."""
    if not path:
        return None
    p = Path(path)
    if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
        return None
    return p

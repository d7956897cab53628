"""Open image files safely: every failure names the file, every odd mode becomes 8-bit RGB.

Two entry points:

* :func:`check_image` — the cheap load-time check readers run on every record (header open,
  pixel limit, ``Image.verify()``). It does not decode pixel data, so a JPEG whose entropy-coded
  body is cut short passes it (PIL's JPEG ``verify`` is a no-op) and is caught by
  :func:`load_image` instead.
* :func:`load_image` — full decode into 8-bit RGB, via :func:`to_rgb`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xmodal.errors import BadInputError

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "check_image", "load_image", "to_rgb"]

#: Images with more pixels than this are refused (decompression-bomb guard): 64 megapixels.
DEFAULT_MAX_PIXELS = 64_000_000

#: File suffixes (lower case) treated as images when a folder is scanned.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WIDE_INT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_WHITE = (255, 255, 255, 255)


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(grey.astype(np.uint8), mode="L").convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Conversions (each by a fixed rule, never by the image's own value range, so the same
    pixel value always gives the same colour):

    * ``RGB``: returned as is.
    * ``1``, ``L``: grey replicated to the three channels.
    * ``I;16*`` and ``I`` (16-bit grey, as PIL reads 16-bit PNG/TIFF): ``round(v / 257)``, i.e.
      0..65535 maps linearly onto 0..255; values outside 0..65535 (only possible in ``I``) are
      clipped first.
    * ``F`` (float grey): values in [0, 1] are scaled by 255; any other range is rescaled
      min–max onto 0..255 (float images carry no fixed white point).
    * ``CMYK``: PIL's naive conversion, ``R = 255 - C`` and so on, times ``1 - K`` (pure cyan
      ``(255, 0, 0, 0)`` gives ``(0, 255, 255)``).
    * ``P`` (palette): looked up; with a transparent index it is treated as alpha (below).
    * Alpha (``RGBA``, ``LA``, ``PA``, or a ``transparency`` entry on ``L``/``RGB``/``P``):
      composited over white.
    * Anything else (``YCbCr``, ``LAB``, ``HSV``, ...): ``image.convert("RGB")``.
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _WIDE_INT_MODES:
        arr = np.asarray(image, dtype=np.float64)
        return _grey_to_rgb(np.clip(np.rint(np.clip(arr, 0, 65535) / 257.0), 0, 255))
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            scaled = arr * 255.0
        else:
            scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return _grey_to_rgb(np.clip(np.rint(scaled), 0, 255))
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _open_checked(path: Path, max_pixels: int) -> Image.Image:
    """Open ``path`` (header only) and enforce the pixel limit; the caller closes the image."""
    if not path.is_file():
        raise BadInputError(path, "image file not found")
    with warnings.catch_warnings():
        # Our own max_pixels is the limit; PIL's global warning threshold is not consulted.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(path)
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise BadInputError(
            path, f"image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}"
        )
    return im


def _wrap_errors(path: Path, exc: Exception) -> BadInputError:
    if isinstance(exc, UnidentifiedImageError):
        return BadInputError(path, f"not a readable image ({exc})")
    if isinstance(exc, Image.DecompressionBombError):
        return BadInputError(path, f"image over PIL's decompression-bomb limit ({exc})")
    return BadInputError(path, f"corrupt or truncated image ({exc.__class__.__name__}: {exc})")


_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def check_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Cheap validity check: the file exists, its header parses, it is within ``max_pixels``
    and ``Image.verify()`` passes. Pixel data is not decoded.

    Returns:
        The image size ``(width, height)``.

    Raises:
        BadInputError: naming ``path``, for a missing, unreadable, corrupt or oversized image.
    """
    path = Path(path)
    try:
        im = _open_checked(path, max_pixels)
        try:
            size = im.size
            im.verify()
        finally:
            im.close()
    except BadInputError:
        raise
    except _DECODE_ERRORS as e:
        raise _wrap_errors(path, e) from e
    return size


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` into an 8-bit RGB PIL image (first frame of animations).

    The EXIF orientation tag, when present, is applied (phone photos come out upright).
    Mode conversions follow :func:`to_rgb`.

    Raises:
        BadInputError: the file is missing, unreadable, not an image, truncated, or larger than
            ``max_pixels`` (checked from the header, before decoding).
    """
    path = Path(path)
    try:
        im = _open_checked(path, max_pixels)
        try:
            im.load()
            rgb = to_rgb(_upright(im))
            # to_rgb may return ``im`` itself; detach it from the file before closing.
            return rgb.copy() if rgb is im else rgb
        finally:
            im.close()
    except BadInputError:
        raise
    except _DECODE_ERRORS as e:
        raise _wrap_errors(path, e) from e


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block leaves the image as stored."""
    try:
        out = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):
        return im
    return im if out is None else out

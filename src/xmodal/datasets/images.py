"""Open image files safely: every failure names the file, every odd mode becomes 8-bit RGB.

Two entry points:

* :func:`check_image` — the load-time check readers run on every record: header open, the
  decoded-cost limits of :class:`ImageLimits` (checked from the header, before any pixel is
  decoded), then ``Image.verify()``; a JPEG is also decoded at 1/8 scale (DCT scaling, about a
  millisecond), which reads its whole entropy-coded body, so a truncated JPEG is caught here.
* :func:`load_image` — full decode into 8-bit RGB, via :func:`to_rgb`, after the same limits.

:class:`ImageLimits` bounds what decoding and the encoders' resize can cost: pixels, decoded
bytes (16-bit samples count two bytes), aspect ratio, and pixels after an encoder resizes the
shorter side (a 20,000 x 1 image resized to 256 on its shorter side would be 1.3 gigapixels).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xmodal.errors import BadInputError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "ImageLimits",
    "check_image",
    "cost_problem",
    "decode_image",
    "load_image",
    "to_rgb",
]

#: Images with more pixels than this are refused (decompression-bomb guard): 64 megapixels.
DEFAULT_MAX_PIXELS = 64_000_000


@dataclass(frozen=True)
class ImageLimits:
    """What decoding one image may cost; every limit is checked from the header alone.

    Attributes:
        max_pixels: Width x height.
        max_decoded_bytes: Width x height x bytes per pixel of the decoded file: channels x
            bytes per sample (16-bit samples count 2), at least 3 (the RGB it becomes).
        max_aspect: Longer side / shorter side.
        max_resized_pixels: Pixels after resizing the shorter side to ``resize`` (what an
            encoder's preprocessing allocates before its centre crop).
        resize: The shorter side an encoder resizes to (256 for ``efficientnet-lite0``).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_decoded_bytes: int = 512 * 1024 * 1024
    max_aspect: float = 20.0
    max_resized_pixels: int = 4_000_000
    resize: int = 256

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"ImageLimits.{name} must be a positive number, got {value!r}")
        if self.max_aspect < 1:
            raise ValueError(f"ImageLimits.max_aspect must be >= 1, got {self.max_aspect}")

    @classmethod
    def of(cls, limits: ImageLimits | int) -> ImageLimits:
        """``limits`` itself, or the default limits with ``max_pixels=limits``."""
        return limits if isinstance(limits, ImageLimits) else cls(max_pixels=int(limits))


def _bytes_per_pixel(im: Image.Image) -> int:
    """Bytes per pixel of the decoded file: channels x bytes per sample, at least 3."""
    if im.mode in ("I", "F"):
        sample = 4
    else:
        rawmodes = " ".join(str(tile.args) for tile in getattr(im, "tile", ()) or ())
        sample = 2 if im.mode.startswith("I;16") or ";16" in rawmodes else 1
    channels = 1 if im.mode.startswith("I;16") else len(im.getbands())
    return max(3, channels * sample)


def cost_problem(im: Image.Image, limits: ImageLimits) -> str | None:
    """What limit an opened (not yet decoded) image is over, in words naming it; ``None`` if
    it is within every limit."""
    w, h = im.size
    if w < 1 or h < 1:
        return f"image is {w}x{h} pixels (empty)"
    pixels = w * h
    if pixels > limits.max_pixels:
        return f"image is {w}x{h} = {pixels:,} pixels, over the limit of {limits.max_pixels:,}"
    short, long = min(w, h), max(w, h)
    if long / short > limits.max_aspect:
        return (
            f"image is {w}x{h}, an aspect ratio of {long / short:,.0f}:1, over the limit of "
            f"{limits.max_aspect:g}:1 (max_aspect)"
        )
    decoded = pixels * _bytes_per_pixel(im)
    if decoded > limits.max_decoded_bytes:
        return (
            f"image is {w}x{h} in mode {im.mode} ({_bytes_per_pixel(im)} bytes per pixel): "
            f"{decoded:,} bytes decoded, over the limit of {limits.max_decoded_bytes:,} "
            "(max_decoded_bytes)"
        )
    resized = limits.resize * int(limits.resize * long / short)
    if resized > limits.max_resized_pixels:
        return (
            f"image is {w}x{h}: {resized:,} pixels once its shorter side is resized to "
            f"{limits.resize}, over the limit of {limits.max_resized_pixels:,} "
            "(max_resized_pixels)"
        )
    return None


#: File suffixes (lower case) treated as images when a folder is scanned.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WIDE_INT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_WHITE = (255, 255, 255, 255)


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(grey.astype(np.uint8, copy=False), mode="L").convert("RGB")


def _wide_to_8bit(arr: np.ndarray, rows: int = 256) -> np.ndarray:
    """``round(clip(v, 0, 65535) / 257)`` as uint8, a block of rows at a time: integer
    arithmetic, so a 16-bit image costs one byte per pixel beyond itself, not 30 in floats."""
    arr = arr.reshape(arr.shape[0], -1) if arr.ndim != 2 else arr
    out = np.empty(arr.shape, dtype=np.uint8)
    for start in range(0, arr.shape[0], rows):
        block = np.clip(arr[start : start + rows].astype(np.int64), 0, 65535)
        out[start : start + rows] = (block + 128) // 257  # 257 is odd: never a tie
    return out


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
        return _grey_to_rgb(_wide_to_8bit(np.asarray(image)))
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


def open_header(source: Path | BinaryIO) -> Image.Image:
    """``Image.open`` without PIL's global decompression-bomb threshold (our limits apply)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(source)


def _open_checked(path: Path, limits: ImageLimits, data: bytes | None = None) -> Image.Image:
    """Open ``path`` (or its bytes ``data``; header only) and enforce ``limits``; the caller
    closes the image."""
    if data is None and not path.is_file():
        raise BadInputError(path, "image file not found")
    im = open_header(path if data is None else io.BytesIO(data))
    problem = cost_problem(im, limits)
    if problem is not None:
        im.close()
        raise BadInputError(path, problem)
    return im


def _wrap_errors(path: Path, exc: Exception) -> BadInputError:
    if isinstance(exc, UnidentifiedImageError):
        return BadInputError(path, f"not a readable image ({exc})")
    if isinstance(exc, Image.DecompressionBombError):
        return BadInputError(path, f"image over PIL's decompression-bomb limit ({exc})")
    return BadInputError(path, f"corrupt or truncated image ({exc.__class__.__name__}: {exc})")


_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def check_image(
    path: str | Path, max_pixels: ImageLimits | int = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """Cheap validity check: the file exists, its header parses, it is within the limits
    (``max_pixels``: an :class:`ImageLimits`, or a pixel count with the other limits at their
    defaults) and ``Image.verify()`` passes. Pixel data is not decoded, except that a JPEG is
    decoded at 1/8 scale to catch a truncated body.

    Returns:
        The image size ``(width, height)``.

    Raises:
        BadInputError: naming ``path``, for a missing, unreadable, corrupt or oversized image.
    """
    path = Path(path)
    try:
        im = _open_checked(path, ImageLimits.of(max_pixels))
        try:
            size = im.size
            if im.format in ("JPEG", "MPO"):  # verify() is a no-op: decode at 1/8 scale
                im.draft("RGB", (1, 1))
                im.load()
            else:
                im.verify()
        finally:
            im.close()
    except BadInputError:
        raise
    except _DECODE_ERRORS as e:
        raise _wrap_errors(path, e) from e
    return size


def load_image(
    path: str | Path,
    max_pixels: ImageLimits | int = DEFAULT_MAX_PIXELS,
    *,
    data: bytes | None = None,
) -> Image.Image:
    """Decode ``path`` into an 8-bit RGB PIL image (first frame of animations).

    ``data``, when given, is the file's bytes already read by the caller (e.g. to hash them):
    they are decoded instead of reading ``path`` again, and errors still name ``path``.

    The EXIF orientation tag, when present, is applied (phone photos come out upright).
    Mode conversions follow :func:`to_rgb`.

    Raises:
        BadInputError: the file is missing, unreadable, not an image, truncated, or over a
            limit of ``max_pixels`` (an :class:`ImageLimits` or a pixel count; checked from
            the header, before decoding).
    """
    path = Path(path)
    try:
        im = _open_checked(path, ImageLimits.of(max_pixels), data)
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


def decode_image(
    data: bytes, max_pixels: ImageLimits | int = DEFAULT_MAX_PIXELS, name: str = "upload"
) -> Image.Image:
    """:func:`load_image` for bytes in memory (an upload): no file written, no extra copy.

    Raises:
        BadInputError: as :func:`load_image`, its path being ``name``.
    """
    where = Path(name)
    try:
        im = open_header(io.BytesIO(data))
        problem = cost_problem(im, ImageLimits.of(max_pixels))
        if problem is not None:
            raise BadInputError(where, problem)
        im.load()
        return to_rgb(_upright(im))  # in memory: nothing to detach from
    except BadInputError:
        raise
    except _DECODE_ERRORS as e:
        raise _wrap_errors(where, e) from e


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block leaves the image as stored."""
    try:
        out = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):
        return im
    return im if out is None else out

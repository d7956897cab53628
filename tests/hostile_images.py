"""Crafted image headers for the decoded-cost tests: a few bytes that claim huge pixel counts.

Only the header (PNG signature, IHDR, a token IDAT, IEND) is written: opening one reads the
size and mode, and no test ever decodes it, so nothing big is allocated.
"""

from __future__ import annotations

import struct
import zlib

__all__ = ["png_header"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A PNG whose IHDR says ``width`` x ``height`` (colour type 0 grey, 2 RGB, 6 RGBA) and
    whose pixel data is a token few bytes (it would fail to decode: no test decodes it)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )

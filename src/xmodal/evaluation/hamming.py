"""Binary codes: packing, Hamming distances, and Hamming scores for the mAP functions.

Code formats accepted by :func:`hamming_distance` and :func:`hamming_scores`:

* **unpacked** ``[n, bits]`` codes with values in ``{-1, +1}`` or in ``{0, 1}`` (any int, float or
  bool dtype *except* ``uint8``). A bit is 1 where the code is positive (``+1`` or ``1``).
* **packed** ``[n, ceil(bits / 8)]`` ``uint8`` rows as made by :func:`pack_codes`.

``uint8`` arrays are taken as packed unless ``packed=False`` is passed: ``(x > 0).astype(np.uint8)``
codes must be passed with ``packed=False`` (or as ``bool``/``int8``).

Bit order: :func:`pack_codes` is ``np.packbits(codes > 0, axis=1)`` with numpy's default
``bitorder="big"``: code bit ``i`` is bit ``7 - i % 8`` (counting from the least significant
bit) of byte ``i // 8``; a last partial byte is padded with zero bits. Distances do not depend on
the bit order as long as both sides use the same one, and padding bits are 0 on both sides when
both were packed from the same number of bits.

Distances are popcounts of XORed 64-bit words (``np.bitwise_count``; a byte lookup table on
numpy < 2), computed on chunks of query rows.
"""

from __future__ import annotations

import numpy as np

__all__ = ["hamming_distance", "hamming_scores", "pack_codes", "unpack_codes"]

#: Bytes (query rows x db rows x word size) XORed at once.
_CHUNK_BYTES = 1 << 24

_POPCOUNT_LUT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Pack ``[n, bits]`` ``{-1,+1}`` or ``{0,1}`` codes into ``[n, ceil(bits/8)]`` uint8 rows.

    Raises:
        ValueError: if ``codes`` is not 2-D or holds values other than ``{-1, +1}`` / ``{0, 1}``.

    Example:
        >>> pack_codes(np.array([[1, -1, -1, -1, -1, -1, -1, 1, 1]]))
        array([[129, 128]], dtype=uint8)
    """
    return np.packbits(_code_bits(codes, "codes"), axis=1)


def unpack_codes(
    packed: np.ndarray, bits: int | None = None, *, signed: bool = False
) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``[n, bits]`` int8 codes, ``{0, 1}`` or ``{-1, +1}``.

    Args:
        packed: ``[n, n_bytes]`` uint8 packed codes.
        bits: Code length (default ``8 * n_bytes``); drops the padding of a last partial byte.
        signed: Return ``{-1, +1}`` instead of ``{0, 1}``.

    Raises:
        ValueError: if ``packed`` is not 2-D uint8 or ``bits`` does not fit its byte count.
    """
    p = np.asarray(packed)
    if p.ndim != 2 or p.dtype != np.uint8:
        raise ValueError(f"packed must be a 2-D uint8 array, got {p.dtype} of shape {p.shape}")
    n_bytes = p.shape[1]
    if bits is None:
        bits = 8 * n_bytes
    if not 8 * (n_bytes - 1) < bits <= 8 * n_bytes:
        raise ValueError(f"bits={bits} does not fit packed codes of {n_bytes} bytes per row")
    out = np.unpackbits(p, axis=1, count=bits).astype(np.int8)
    return 2 * out - 1 if signed else out


def hamming_distance(
    query_codes: np.ndarray,
    db_codes: np.ndarray,
    *,
    packed: bool | None = None,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Hamming distances between every query code and every database code.

    Args:
        query_codes: ``[n_query, bits]`` unpacked or ``[n_query, n_bytes]`` packed codes.
        db_codes: ``[n_db, bits]`` unpacked or ``[n_db, n_bytes]`` packed codes.
        packed: ``None`` (default): each array is packed iff its dtype is uint8. ``True`` /
            ``False`` forces both arrays to be read as packed / unpacked.
        chunk_size: Query rows per chunk (default: about 16 MB of XORed words per chunk).

    Returns:
        ``[n_query, n_db]`` int32 distances in ``[0, bits]``.

    Raises:
        ValueError: on non-2-D input, invalid code values, or code lengths that differ.

    Example:
        >>> hamming_distance(np.array([[1, -1, 1, 1]]), np.array([[1, 1, 1, 1], [-1, 1, -1, -1]]))
        array([[1, 4]], dtype=int32)
    """
    q, q_bits = _packed(query_codes, packed, "query_codes")
    d, d_bits = _packed(db_codes, packed, "db_codes")
    if q.shape[1] != d.shape[1] or (q_bits is not None and d_bits is not None and q_bits != d_bits):
        q_len = f"{q_bits} bits" if q_bits is not None else f"{q.shape[1]} packed bytes"
        d_len = f"{d_bits} bits" if d_bits is not None else f"{d.shape[1]} packed bytes"
        raise ValueError(f"query_codes have {q_len} per row but db_codes have {d_len}")
    n_query, n_db = q.shape[0], d.shape[0]
    qw, dw = _as_words(q), _as_words(d)
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_BYTES // max(1, n_db * dw.itemsize))
    elif chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out = np.zeros((n_query, n_db), dtype=np.int32)
    dw_cols = [np.ascontiguousarray(dw[:, w]) for w in range(dw.shape[1])]
    for a in range(0, n_query, chunk_size):
        b = min(a + chunk_size, n_query)
        for w, d_col in enumerate(dw_cols):  # one 64-bit word (or byte) column at a time
            out[a:b] += _popcount(qw[a:b, w, None] ^ d_col[None, :])
    return out


def hamming_scores(
    query_codes: np.ndarray,
    db_codes: np.ndarray,
    *,
    packed: bool | None = None,
    chunk_size: int | None = None,
) -> np.ndarray:
    """``-hamming_distance`` as float32 (exact), so that higher = better for the mAP functions."""
    dist = hamming_distance(query_codes, db_codes, packed=packed, chunk_size=chunk_size)
    return np.negative(dist, dtype=np.float32)


# --------------------------------------------------------------------------- helpers


def _code_bits(codes: np.ndarray, name: str) -> np.ndarray:
    """Unpacked ``{-1,+1}`` / ``{0,1}`` codes -> bool bits, validating the values."""
    c = np.asarray(codes)
    if c.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, bits], got shape {c.shape}")
    if c.dtype == bool:
        return c
    if not np.issubdtype(c.dtype, np.number) or np.iscomplexobj(c):
        raise ValueError(f"{name} must be a numeric or bool code matrix, got dtype {c.dtype}")
    if c.size and not (np.isin(c, (-1, 1)).all() or np.isin(c, (0, 1)).all()):
        raise ValueError(
            f"{name} must hold only {{-1, +1}} or only {{0, 1}} values "
            "(binarise with np.sign / > 0 first, or pass packed uint8 codes)"
        )
    return c > 0


def _packed(codes: np.ndarray, packed: bool | None, name: str) -> tuple[np.ndarray, int | None]:
    """``(packed uint8 rows, bits or None when the input was already packed)``."""
    c = np.asarray(codes)
    if c.ndim == 2 and c.shape[1] == 0:
        raise ValueError(f"{name} has no bits (shape {c.shape})")
    is_packed = c.dtype == np.uint8 if packed is None else packed
    if not is_packed:
        bits = _code_bits(c, name)
        return np.packbits(bits, axis=1), bits.shape[1]
    if c.ndim != 2 or c.dtype != np.uint8:
        raise ValueError(f"packed {name} must be a 2-D uint8 array, got {c.dtype} {c.shape}")
    return c, None


def _as_words(p: np.ndarray) -> np.ndarray:
    """Packed bytes -> uint64 words (zero-padded to whole words) when popcount is native."""
    if not hasattr(np, "bitwise_count"):
        return np.ascontiguousarray(p)
    n, n_bytes = p.shape
    n_words = -(-n_bytes // 8)
    buf = np.zeros((n, n_words * 8), dtype=np.uint8)
    buf[:, :n_bytes] = p
    return buf.view(np.uint64)


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _POPCOUNT_LUT[x]  # pragma: no cover - numpy < 2

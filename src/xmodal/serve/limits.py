"""What a client may send: size, pixel, length and range limits, and the checks that apply them.

Every check raises :class:`RequestProblem` with an HTTP status and a message naming the bad
input; the app turns it into a JSON ``{"detail": ...}`` response.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from fastapi import HTTPException

from xmodal.datasets.images import ImageLimits

__all__ = [
    "BodyLimitMiddleware",
    "Limits",
    "RequestProblem",
    "check_item_id",
    "read_capped",
    "send_problem",
]


class RequestProblem(Exception):
    """A request the service refuses: ``status`` (4xx), ``detail`` (what was wrong) and extra
    response ``headers``."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


@dataclass(frozen=True)
class Limits:
    """Limits on requests.

    Attributes:
        max_upload_bytes: Largest uploaded image file (default 10 MiB). Whole request bodies may
            exceed it by ``max_form_overhead`` (multipart headers and the other form fields).
        max_form_overhead: Extra bytes a request body may carry beside the file.
        max_pixels: Largest decoded image, width x height (decompression-bomb guard).
        max_decoded_bytes: Largest decoded image in bytes: pixels x channels x bytes per sample
            (16-bit samples count 2; at least 3 bytes a pixel, the RGB it becomes).
        max_aspect: Largest ratio of an image's longer side to its shorter side.
        max_resized_pixels: Most pixels of an image once the index's image encoder has resized
            its shorter side (to 256 for ``efficientnet-lite0``): the cost a thin image
            would otherwise amplify.
        max_query_chars: Longest text query.
        max_k: Most results per query.
        max_candidates: Most Hamming candidates in ``two-stage`` mode.
        max_labels: Most labels in a label filter or on a new item.
        max_label_chars: Longest label.
        max_captions: Most captions on a new item.
        max_caption_chars: Longest caption.
        max_id_chars: Longest item id.
        max_thumbnail: Largest thumbnail side in pixels.
        max_concurrent_decodes: Images decoded at once (bounds memory under many uploads).
        max_concurrent_encodes: Worker threads that decode and encode uploaded images; image
            work runs only there, so it can never hold up more than this many threads.
        max_queued_encodes: Image requests waiting for or in those workers; one more is
            answered 503 (busy) at once.
        encode_timeout_s: Seconds an image request waits for its encoding before a 504.
        read_timeout_s: Seconds a request body may stall before the request is answered 408
            (a body shorter than its ``Content-Length`` does not hold a connection forever).
        max_threads: Requests handled at once: the worker threads of the server's event loop
            (anyio's default is 40). Each thread that runs the query encoders keeps its own
            allocator arena and buffers, so this bounds memory as well as CPU oversubscription;
            further requests wait for a free thread. Default: ``min(32, CPUs + 4)``, as
            :class:`concurrent.futures.ThreadPoolExecutor`.
    """

    max_upload_bytes: int = 10 * 1024 * 1024
    max_form_overhead: int = 64 * 1024
    max_pixels: int = 25_000_000
    max_decoded_bytes: int = 100 * 1024 * 1024
    max_aspect: int = 20
    max_resized_pixels: int = 4_000_000
    max_query_chars: int = 1000
    max_k: int = 100
    max_candidates: int = 10_000
    max_labels: int = 32
    max_label_chars: int = 200
    max_captions: int = 20
    max_caption_chars: int = 1000
    max_id_chars: int = 512
    max_thumbnail: int = 512
    max_concurrent_decodes: int = 4
    max_concurrent_encodes: int = 2
    max_queued_encodes: int = 16
    encode_timeout_s: int = 30
    read_timeout_s: int = 15
    max_threads: int = field(default_factory=lambda: min(32, (os.cpu_count() or 1) + 4))

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")

    @property
    def max_body_bytes(self) -> int:
        """Largest request body accepted on any route."""
        return self.max_upload_bytes + self.max_form_overhead

    def image_limits(self, resize: int = 256) -> ImageLimits:
        """The decoded-cost limits of an upload, for an encoder resizing to ``resize``."""
        return ImageLimits(
            max_pixels=self.max_pixels,
            max_decoded_bytes=self.max_decoded_bytes,
            max_aspect=float(self.max_aspect),
            max_resized_pixels=self.max_resized_pixels,
            resize=resize,
        )


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


def check_item_id(item_id: str, limits: Limits) -> str:
    """``item_id`` if it is an acceptable item id, else :class:`RequestProblem` (400).

    Ids are looked up in the index's metadata, never used as paths; ids that look like paths
    escaping a folder (``..`` segments, absolute paths, drive letters, backslashes) or that hold
    control characters (NUL included) are refused outright.
    """
    if not item_id:
        raise RequestProblem(400, "item id is empty")
    if len(item_id) > limits.max_id_chars:
        raise RequestProblem(
            400,
            f"item id is {len(item_id)} characters long, over the limit of {limits.max_id_chars}",
        )
    if _CONTROL.search(item_id):
        raise RequestProblem(400, "item id contains control characters (NUL, newline, ...)")
    if "\\" in item_id:
        raise RequestProblem(400, f"item id {item_id!r} contains a backslash")
    if item_id.startswith("/") or _DRIVE.match(item_id):
        raise RequestProblem(400, f"item id {item_id!r} is an absolute path")
    if any(part in ("..", ".") for part in item_id.split("/")):
        raise RequestProblem(400, f"item id {item_id!r} has a '.' or '..' path segment")
    try:
        item_id.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestProblem(400, "item id is not valid Unicode (lone surrogate)") from e
    return item_id


def read_capped(stream: BinaryIO, limit: int, what: str = "upload", chunk: int = 1 << 16) -> bytes:
    """Read ``stream`` in chunks, refusing (413) as soon as more than ``limit`` bytes arrive."""
    parts: list[bytes] = []
    total = 0
    while True:
        block = stream.read(min(chunk, limit + 1 - total))
        if not block:
            break
        total += len(block)
        if total > limit:
            raise RequestProblem(413, f"{what} is larger than the limit of {limit:,} bytes")
        parts.append(block)
    return b"".join(parts)


class _BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a body outgrows the limit while it streams in."""


class BodyLimitMiddleware:
    """ASGI middleware refusing request bodies over ``limit`` bytes with a JSON 413.

    A ``Content-Length`` over the limit is refused before a byte of the body is read; a body
    without one (chunked) is counted as it streams and refused as soon as it passes the limit,
    so no request is ever read whole beyond ``limit``.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _detail(self, size: str) -> str:
        return f"request body {size} is over the limit of {self.limit:,} bytes"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                declared = value
        if declared is not None:
            text = declared.decode("latin-1").strip()
            if not text.isdigit():
                await send_problem(send, 400, f"Content-Length {text!r} is not a number")
                return
            if int(text) > self.limit:
                await send_problem(send, 413, self._detail(f"of {int(text):,} bytes"))
                return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge(413, self._detail("(streamed)"))
            return message

        await self.app(scope, counted, send)


async def send_problem(
    send: Any, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    """Send a JSON ``{"detail": ...}`` response from ASGI middleware and ask the client to close
    the connection (its request body may be left unread)."""
    body = json.dumps({"detail": detail}).encode()
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

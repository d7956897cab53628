"""ASGI guards that act before a route reads the request: write tokens, stalled bodies, secrets
in query strings, and form fields that are not UTF-8.

* :class:`WriteGuardMiddleware` — a write request (``POST /items``, ``DELETE /items/...``)
  without the right bearer token is answered 401/403 before a byte of its body is read.
* :class:`ReadTimeoutMiddleware` — a request body that stalls (shorter than its
  ``Content-Length``, or a client that stops sending) is answered 408 after
  ``Limits.read_timeout_s`` instead of holding its connection forever.
* :class:`RedactQueryMiddleware` — values of query parameters that look like secrets
  (``token``, ``access_token``, ``api_key``, ...) are replaced by ``REDACTED`` in the request
  seen by the app and the access log (tokens are only ever read from the header).
* :class:`StrictFormRoute` — multipart text fields must be UTF-8 (Starlette falls back to
  Latin-1): anything else is a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio
from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser

from xmodal.serve.limits import RequestProblem, send_problem

__all__ = [
    "ReadTimeoutMiddleware",
    "RedactQueryMiddleware",
    "StrictFormRoute",
    "WriteGuardMiddleware",
]

#: Query parameters whose values never reach the app or the access log.
SECRET_PARAMS = frozenset(
    {"token", "access_token", "api_key", "apikey", "key", "password", "secret", "authorization"}
)


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class WriteGuardMiddleware:
    """Checks the bearer token of write requests before the route reads their body.

    Args:
        app: The ASGI app.
        authorize: Raises :class:`RequestProblem` (401/403) for a refused ``Authorization``
            header value (``None`` when absent).
    """

    def __init__(self, app: Any, authorize: Callable[[str | None], None]) -> None:
        self.app = app
        self.authorize = authorize

    @staticmethod
    def is_write(scope: dict) -> bool:
        path, method = scope.get("path", ""), scope.get("method", "")
        return (method == "POST" and path.rstrip("/") == "/items") or (
            method == "DELETE" and path.startswith("/items/")
        )

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.is_write(scope):
            try:
                self.authorize(_header(scope, b"authorization"))
            except RequestProblem as e:
                await send_problem(send, e.status, e.detail, e.headers)
                return
        await self.app(scope, receive, send)


class ReadTimeoutMiddleware:
    """Answers 408 when the next piece of a request body takes over ``timeout_s`` to arrive.

    Only the body is timed: once its last piece has arrived, ``receive`` (which streaming
    responses use to wait for a disconnect) is passed through untouched.
    """

    def __init__(self, app: Any, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        done = False

        async def timed() -> dict:
            nonlocal done
            if done:
                return await receive()
            try:
                with anyio.fail_after(self.timeout_s):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408,
                    f"the request body stalled: nothing arrived for {self.timeout_s:g} s "
                    "(is it shorter than its Content-Length?)",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        await self.app(scope, timed, send)


class RedactQueryMiddleware:
    """Replaces the values of secret-looking query parameters by ``REDACTED`` (in place, so
    the server's access log, which reads the same scope, never sees them)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        raw = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if raw:
            pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
            if any(k.lower() in SECRET_PARAMS for k, _ in pairs):
                clean = [(k, "REDACTED" if k.lower() in SECRET_PARAMS else v) for k, v in pairs]
                scope["query_string"] = urlencode(clean).encode("latin-1")
        await self.app(scope, receive, send)


class _StrictMultiPartParser(MultiPartParser):
    """Starlette's parser, but a text field that is not valid in its charset is an error."""

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode(self._charset or "utf-8")
            except (UnicodeDecodeError, LookupError) as e:
                raise MultiPartException(
                    f"form field {part.field_name!r} is not valid {self._charset or 'utf-8'} text"
                ) from e
        super().on_part_end()


class _StrictRequest(Request):
    async def _get_form(self, **options: Any) -> FormData:
        content_type = self.headers.get("content-type", "")
        if self._form is None and content_type.lower().startswith("multipart/form-data"):
            try:
                parser = _StrictMultiPartParser(self.headers, self.stream(), **options)
                self._form = await parser.parse()
            except MultiPartException as exc:
                raise HTTPException(400, detail=exc.message) from exc
            return self._form
        return await super()._get_form(**options)


class StrictFormRoute(APIRoute):
    """A route whose multipart form fields must be valid UTF-8 (400 otherwise)."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Any:
            return await handler(_StrictRequest(request.scope, request.receive))

        return strict

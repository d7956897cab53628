"""The FastAPI app: JSON search API, item store, health, Prometheus metrics and the web page.

::

    from xmodal.serve import create_app
    app = create_app("indexes/emoji", token=os.environ.get("XMODAL_TOKEN"))
    # uvicorn.run(app, host="127.0.0.1", port=8000)

Routes (OpenAPI schema at ``/openapi.json``, docs at ``/docs``):

* ``POST /search/text`` — JSON ``{query, k, mode, target, labels?, candidates}``.
* ``POST /search/image`` — multipart: ``file`` (an image) or ``id`` (an indexed item), ``k``,
  ``mode``, ``target``, ``labels``, ``candidates``.
* ``GET /items/{id}``, ``GET /items/{id}/image`` (``?size=N`` for a PNG thumbnail) and
  ``GET /items?id={id}``. Ids may hold slashes; a path ending in ``/image`` always means the
  image route, so an item whose id itself ends in ``/image`` is fetched with ``GET /items?id=``
  (its image is still ``/items/{id}/image``).
* ``POST /items`` (multipart ``id``, ``file``, ``captions``, ``labels``), ``DELETE /items/{id}``:
  need ``Authorization: Bearer <token>``; without a token configured the service is read-only.
* ``GET /health`` (and ``HEAD``), ``GET /metrics``, ``GET /`` (the page) and ``/static/*``.

Every refused request is a JSON 4xx/5xx ``{"detail": "..."}`` naming the problem: 413 for an
image over a decoded-cost limit, 503/504 when image encoding is saturated or too slow, 507 when
the disk is full (docs/security.md lists every refused input).
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations, which
# refer to this function's locals (the limits).
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from xmodal.serve.guards import (
    ReadTimeoutMiddleware,
    RedactQueryMiddleware,
    StrictFormRoute,
    WriteGuardMiddleware,
)
from xmodal.serve.images import media_type
from xmodal.serve.limits import BodyLimitMiddleware, Limits, RequestProblem, read_capped
from xmodal.serve.metrics import CONTENT_TYPE_LATEST, Metrics, MetricsMiddleware
from xmodal.serve.schemas import (
    Health,
    ItemOut,
    Mode,
    Problem,
    SearchResponse,
    Target,
    WriteResponse,
    text_query_model,
)
from xmodal.serve.service import Service

__all__ = ["STATIC", "create_app"]

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("xmodal.serve")

#: Headers of the page: scripts, styles and images only from this origin.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text}
    for code, text in (
        (400, "Bad request (the detail names the problem)"),
        (408, "The request body stalled"),
        (413, "Upload or image too large, or too costly to decode"),
        (415, "Not a readable image"),
        (422, "Invalid parameters"),
        (503, "Image encoding saturated, or the index unavailable"),
        (504, "Image encoding took too long"),
    )
}


class _Headers:
    """ASGI middleware adding ``X-Content-Type-Options: nosniff`` to every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-content-type-options", b"nosniff"),
                ]
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors[:5]:
        loc = list(e.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header"):  # where, not what
            loc = loc[1:]
        where = ".".join(str(x) for x in loc)
        parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(
    index_dir: str | Path,
    *,
    token: str | None = None,
    limits: Limits | None = None,
    upload_dir: str | Path | None = None,
    device: str | None = None,
    preload: bool = False,
    verify: bool = True,
) -> FastAPI:
    """The app serving one index.

    Args:
        index_dir: An index folder (``xmodal index build``).
        token: Bearer token required by ``POST /items`` and ``DELETE /items/{id}``; ``None`` or
            empty makes the service read-only.
        limits: Request limits (defaults: 10 MiB uploads, 25 megapixels, 1,000-character
            queries, k <= 100).
        upload_dir: Where uploaded images are stored (default ``INDEX_DIR/uploads``).
        device: Where query encoders run (``cpu``, ``cuda``, ``None`` = auto).
        preload: Load the query encoders now instead of on the first query.
        verify: Check file checksums whenever an index version is opened.

    Raises:
        IndexFormatError: ``index_dir`` is not a readable index.
    """
    limits = limits or Limits()
    service = Service(
        index_dir, token=token, limits=limits, upload_dir=upload_dir, device=device, verify=verify
    )
    if preload:
        service.preload()
    metrics = Metrics(service.stats)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Sync routes run on the event loop's worker threads: at most ``max_threads`` at once.
        anyio.to_thread.current_default_thread_limiter().total_tokens = limits.max_threads
        yield

    app = FastAPI(
        title="xmodal",
        summary="Cross-modal image–text search over one index.",
        version="1",
        responses=_ERRORS,
        lifespan=lifespan,
    )
    app.router.route_class = StrictFormRoute  # form fields must be UTF-8
    app.state.service = service
    app.state.metrics = metrics

    # --- errors ----------------------------------------------------------------------------
    @app.exception_handler(RequestProblem)
    async def _problem(request: Request, exc: RequestProblem) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": _validation_message(errors), "errors": errors}, 422)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (logged on the server)"}, 500)

    def writer(authorization: Annotated[str | None, Header()] = None) -> None:
        service.authorize(authorization)

    def upload_bytes(file: UploadFile) -> bytes:
        return read_capped(file.file, limits.max_upload_bytes, f"file {file.filename!r}")

    TextQuery = text_query_model(limits)

    # --- search ----------------------------------------------------------------------------
    @app.post("/search/text", response_model=SearchResponse, tags=["search"])
    def search_text(body: TextQuery) -> Any:  # type: ignore[valid-type]
        """Images (``target=image``) or captions (``target=text``) for a text."""
        b: Any = body
        return service.search_text(
            b.query, k=b.k, mode=b.mode, target=b.target, labels=b.labels, candidates=b.candidates
        )

    @app.post("/search/image", response_model=SearchResponse, tags=["search"])
    def search_image(
        file: Annotated[UploadFile | None, File(description="An image to search with.")] = None,
        id: Annotated[
            str | None,
            Form(
                min_length=1,
                max_length=limits.max_id_chars,
                description="Or: search with this indexed item's image.",
            ),
        ] = None,
        k: Annotated[int, Form(ge=1, le=limits.max_k)] = 10,
        mode: Annotated[Mode, Form()] = "float",
        target: Annotated[Target, Form(description="image: image→image; text: image→text.")] = (
            "image"
        ),
        labels: Annotated[list[str] | None, Form()] = None,
        candidates: Annotated[int, Form(ge=1, le=limits.max_candidates)] = 1000,
    ) -> Any:
        """Images or captions for an uploaded image (``file``) or an indexed item (``id``)."""
        data = upload_bytes(file) if file is not None else None
        return service.search_image(
            data=data,
            item_id=id,
            k=k,
            mode=mode,
            target=target,
            labels=labels,
            candidates=candidates,
        )

    # --- items -----------------------------------------------------------------------------
    @app.get(
        "/items/{item_id:path}/image",
        tags=["items"],
        response_class=Response,
        responses={200: {"content": {"image/*": {}}, "description": "The image"}, 404: {}},
    )
    def item_image(
        item_id: str,
        size: Annotated[
            int | None, Query(ge=16, le=limits.max_thumbnail, description="Thumbnail side.")
        ] = None,
    ) -> Response:
        """An item's image file, or a PNG thumbnail of it with ``size``."""
        headers = {"Cache-Control": "private, max-age=300"}
        if size is not None:
            return Response(
                service.thumbnail(item_id, size), media_type="image/png", headers=headers
            )
        path = service.image_file(item_id)
        return FileResponse(path, media_type=media_type(path), headers=headers)

    @app.get(
        "/items/{item_id:path}",
        response_model=ItemOut,
        tags=["items"],
        responses={404: {"model": Problem}},
    )
    def get_item(item_id: str) -> Any:
        """What the index holds of an item (an id ending in ``/image``: use ``GET /items?id=``)."""
        return service.item(item_id)

    @app.get(
        "/items",
        response_model=ItemOut,
        tags=["items"],
        responses={404: {"model": Problem}},
    )
    def get_item_by_query(
        id: Annotated[
            str,
            Query(
                min_length=1,
                max_length=limits.max_id_chars,
                description="The item id; works for every id, those ending in /image included.",
            ),
        ],
    ) -> Any:
        """What the index holds of an item, the id given as a query parameter."""
        return service.item(id)

    @app.post(
        "/items",
        response_model=WriteResponse,
        status_code=201,
        tags=["items"],
        dependencies=[Depends(writer)],
        responses={401: {"model": Problem}, 403: {"model": Problem}, 409: {"model": Problem}},
    )
    def add_item(
        id: Annotated[str, Form(min_length=1, max_length=limits.max_id_chars)],
        file: Annotated[UploadFile, File(description="The item's image.")],
        captions: Annotated[list[str] | None, Form()] = None,
        labels: Annotated[list[str] | None, Form()] = None,
    ) -> Any:
        """Add an item (needs the bearer token); it is encoded with the index's own model."""
        return service.add_item(id, upload_bytes(file), captions or [], labels or [])

    @app.delete(
        "/items/{item_id:path}",
        response_model=WriteResponse,
        tags=["items"],
        dependencies=[Depends(writer)],
        responses={401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}},
    )
    def delete_item(item_id: str) -> Any:
        """Remove an item (needs the bearer token)."""
        return service.delete_item(item_id)

    # --- operations ------------------------------------------------------------------------
    @app.api_route("/health", methods=["GET", "HEAD"], response_model=Health, tags=["service"])
    def health() -> Any:
        """Status, index size and limits."""
        return service.health()

    @app.get("/metrics", tags=["service"], response_class=Response)
    def prometheus() -> Response:
        """Prometheus metrics (text format)."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    # --- the page --------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Innermost first: the body timeout and the write guard act before a route reads a byte;
    # query-string secrets are redacted outermost, before anything (the access log) sees them.
    app.add_middleware(ReadTimeoutMiddleware, timeout_s=limits.read_timeout_s)
    app.add_middleware(WriteGuardMiddleware, authorize=service.authorize)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, limit=limits.max_body_bytes)
    app.add_middleware(_Headers)
    app.add_middleware(RedactQueryMiddleware)
    return app

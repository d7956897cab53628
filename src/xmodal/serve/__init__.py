"""Serve an index over HTTP: JSON API, item store, metrics and a web page (FastAPI).

::

    from xmodal.serve import create_app, run
    run("indexes/emoji", host="127.0.0.1", port=8000, token=None)   # read-only

or ``xmodal serve INDEX_DIR``. Pieces:

* :mod:`~xmodal.serve.app` — :func:`create_app`, the routes.
* :mod:`~xmodal.serve.service` — what the routes do, without HTTP.
* :mod:`~xmodal.serve.limits` — :class:`Limits` and the checks and middleware applying them.
* :mod:`~xmodal.serve.images` — safe decoding of uploads, thumbnails.
* :mod:`~xmodal.serve.metrics` — Prometheus metrics in a per-app registry.
* ``static/`` — the page (plain HTML, CSS and JavaScript; no build step).

Needs the ``serve`` extra: ``pip install 'xmodal[serve]'``.
"""

from __future__ import annotations

from pathlib import Path

from xmodal.serve.app import create_app
from xmodal.serve.limits import Limits

__all__ = ["Limits", "create_app", "run"]


def run(
    index_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    limits: Limits | None = None,
    device: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve ``index_dir`` with uvicorn until interrupted (binds loopback by default)."""
    import uvicorn

    app = create_app(index_dir, token=token, limits=limits, device=device, preload=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)

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

import os
from collections.abc import Callable
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
    torch_threads: int | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve ``index_dir`` with uvicorn until interrupted (binds loopback by default).

    The index is opened and checked (and the query encoders loaded) first, so a corrupt index
    raises :class:`~xmodal.index.IndexFormatError` before anything is served; ``on_ready`` is
    called then, just before the server starts.

    Requests run in parallel on up to ``limits.max_threads`` worker threads. ``torch_threads``
    is how many threads each of them may use inside torch; the default is 1 unless the
    environment sets ``OMP_NUM_THREADS``: OpenMP gives every calling thread a team of its own,
    so N torch threads per request would mean up to ``max_threads x N`` busy threads.
    """
    import uvicorn

    if torch_threads is not None and torch_threads < 1:
        raise ValueError(f"torch_threads must be a positive integer, got {torch_threads!r}")
    if torch_threads is not None or "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(torch_threads or 1)
    app = create_app(index_dir, token=token, limits=limits, device=device, preload=True)
    if on_ready is not None:
        on_ready()
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)

"""Prometheus metrics of one app, in its own registry (no process-wide state).

* ``xmodal_http_requests_total{method, route, status}`` — requests answered.
* ``xmodal_http_request_duration_seconds{method, route}`` — latency histogram.
* ``xmodal_index_items``, ``xmodal_index_texts``, ``xmodal_index_version`` — the index searched.

``route`` is the route's template (``/items/{item_id:path}``), never the raw path a client sent,
so clients cannot grow the number of series.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "MetricsMiddleware"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _stat(index_stats: Callable[[], tuple[int, int, int]], i: int) -> float:
    """Entry ``i`` of the index statistics, as a gauge reads it."""
    return float(index_stats()[i])


class Metrics:
    """The app's metrics; ``index_stats`` returns ``(items, texts, version)`` when scraped."""

    def __init__(self, index_stats: Callable[[], tuple[int, int, int]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "xmodal_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "xmodal_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        for i, (name, doc) in enumerate(
            (
                ("xmodal_index_items", "Items (image rows) in the index version searched."),
                ("xmodal_index_texts", "Caption rows in the index version searched."),
                ("xmodal_index_version", "Version number of the index searched."),
            )
        ):
            gauge = Gauge(name, doc, registry=self.registry)
            gauge.set_function(functools.partial(_stat, index_stats, i))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware timing every HTTP request into :class:`Metrics`."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "(unmatched)"
            self.metrics.observe(
                scope.get("method", ""), template, status, time.perf_counter() - start
            )

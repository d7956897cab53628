"""A bounded worker pool for image work, so one costly request cannot stall the others.

Decoding and encoding uploaded images runs on ``workers`` threads of its own; at most ``queued``
image requests wait for or occupy them (one more is refused at once with a 503), and a request
waits at most ``timeout_s`` for its result (then a 504; work not yet started is cancelled).
Text searches and lookups never wait behind it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from xmodal.serve.limits import RequestProblem

__all__ = ["EncodePool"]

T = TypeVar("T")


class EncodePool:
    """Runs image work on a few threads with a bounded queue and a per-request timeout."""

    def __init__(self, workers: int, queued: int, timeout_s: float) -> None:
        self.workers, self.queued, self.timeout_s = workers, queued, timeout_s
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="xmodal-image")
        self._room = threading.BoundedSemaphore(queued)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a pool thread; its own exceptions pass through.

        Raises:
            RequestProblem: 503 when ``queued`` image requests are already waiting, 504 when
                the result takes over ``timeout_s``.
        """
        if not self._room.acquire(blocking=False):
            raise RequestProblem(
                503,
                f"busy: {self.queued} image requests are already being encoded or waiting "
                "(max_queued_encodes); retry shortly",
                {"Retry-After": "1"},
            )
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._room.release()
            raise
        future.add_done_callback(lambda _: self._room.release())
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            future.cancel()
            raise RequestProblem(
                504,
                f"encoding the image took over {self.timeout_s:g} s (encode_timeout_s): the "
                "server is busy; retry later",
            ) from None

    def close(self) -> None:
        """Stop the threads once their current work is done; queued work is dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)

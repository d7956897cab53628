"""One ``with`` protocol for the index's resources: leaving the block closes them."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Closing"]


class Closing:
    """A base for objects with a :meth:`close`: ``with obj:`` closes ``obj`` however the block
    ends (readers, snapshots, searchers, metadata connections)."""

    def close(self) -> None:
        """Release what the object holds."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

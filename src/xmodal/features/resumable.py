"""A ``.npy`` array filled row-block by row-block that survives being killed and resumes.

Rows go into ``<final>.partial.npy`` (a memory map made by ``np.lib.format.open_memmap``). After
each chunk the map is flushed and fsync'd, and only then is ``<final>.progress.json`` replaced
(atomically, fsync'd) with the number of rows completed, so the progress file never claims rows
that are not on disk. :meth:`PartialArray.finish` renames the partial file over the final path.
A new :class:`PartialArray` for the same final path and identity resumes after the last committed
row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.io import fsync_dir, replace_file, write_json_atomic

__all__ = ["PartialArray", "partial_paths"]


def partial_paths(final: str | Path) -> tuple[Path, Path]:
    """``(partial .npy, progress .json)`` paths that belong to ``final``."""
    final = Path(final)
    stem = final.name.removesuffix(".npy")
    return final.with_name(f"{stem}.partial.npy"), final.with_name(f"{stem}.progress.json")


class PartialArray:
    """Fill a ``[rows, dim]`` array on disk in order, committing every chunk.

    Args:
        final: Where the finished ``.npy`` goes.
        rows: Total rows.
        dim: Columns.
        identity: JSON-able facts that must match for a resume (encoder key, dataset
            fingerprint, ...); a mismatch discards the partial file and starts over.
        dtype: Array dtype.

    Attributes:
        done: Rows written so far (committed or not).
        committed: Rows known to be on disk.
        resumed_from: Committed rows found when opened (0 for a fresh start).
    """

    def __init__(
        self,
        final: str | Path,
        rows: int,
        dim: int,
        identity: dict[str, Any],
        dtype: str = "float32",
    ) -> None:
        if rows < 0 or dim < 1:
            raise ValueError(f"bad partial array shape ({rows}, {dim})")
        self.final = Path(final)
        self.partial, self.progress = partial_paths(self.final)
        self.rows, self.dim, self.dtype = rows, dim, np.dtype(dtype)
        self.identity = {**identity, "rows": rows, "dim": dim, "dtype": self.dtype.name}
        self.resumed_from = self._committed_rows_on_disk()
        if self.resumed_from > 0:
            self._array = np.lib.format.open_memmap(self.partial, mode="r+")
        else:
            self._array = np.lib.format.open_memmap(
                self.partial, mode="w+", dtype=self.dtype, shape=(rows, dim)
            )
            self._write_progress(0)
        self.done = self.committed = self.resumed_from

    def _committed_rows_on_disk(self) -> int:
        """Rows a previous run committed, or 0 when there is nothing usable to resume."""
        if not (self.progress.is_file() and self.partial.is_file()):
            return 0
        try:
            state = json.loads(self.progress.read_text(encoding="utf-8"))
            arr = np.lib.format.open_memmap(self.partial, mode="r")
            ok_shape = arr.shape == (self.rows, self.dim) and arr.dtype == self.dtype
            del arr
        except (OSError, ValueError):
            return 0
        if not ok_shape or state.get("identity") != self.identity:
            return 0
        done = state.get("rows_done")
        return done if isinstance(done, int) and 0 <= done <= self.rows else 0

    def _write_progress(self, rows_done: int) -> None:
        write_json_atomic(self.progress, {"identity": self.identity, "rows_done": rows_done})

    def rewind(self, rows: int) -> None:
        """Resume from ``rows`` (at most the committed rows) instead: later rows are rewritten.

        Two arrays filled side by side (features and their digests) resume from the smaller of
        their committed counts.
        """
        if not 0 <= rows <= self.committed:
            raise ValueError(f"cannot rewind to row {rows}: {self.committed} committed")
        self.done = self.committed = self.resumed_from = rows

    @property
    def uncommitted(self) -> int:
        """Rows written since the last :meth:`commit`."""
        return self.done - self.committed

    def write(self, block: np.ndarray) -> None:
        """Append ``block`` (``[b, dim]``) after the rows written so far."""
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ValueError(f"block of shape {block.shape} does not fit [*, {self.dim}]")
        end = self.done + block.shape[0]
        if end > self.rows:
            raise ValueError(f"writing rows {self.done}..{end} past the end ({self.rows} rows)")
        self._array[self.done : end] = block
        self.done = end

    def commit(self) -> None:
        """Flush and fsync the written rows, then record them in the progress file."""
        if self.uncommitted == 0:
            return
        self._array.flush()
        with open(self.partial, "rb+") as f:
            os.fsync(f.fileno())
        self._write_progress(self.done)
        self.committed = self.done

    def finish(self) -> Path:
        """Commit, move the partial file over ``final`` and drop the progress file."""
        if self.done != self.rows:
            raise ValueError(f"cannot finish: {self.done} of {self.rows} rows written")
        self.commit()
        self._array.flush()
        del self._array
        replace_file(self.partial, self.final)
        self.progress.unlink(missing_ok=True)
        fsync_dir(self.final.parent)
        return self.final

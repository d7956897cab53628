"""Machinery every reader shares: the bad-input policy, record checks, ids, line decoding.

Skip rule (``on_bad="skip"``), the same in every reader:

* An image problem (missing, corrupt, over the pixel limit, path outside the data root) drops
  the whole record.
* A bad caption (empty, whitespace-only, not a string) drops just that caption. If the record
  had captions and none is left, the record is dropped too (a captioned collection never
  gains an uncaptioned record by accident). Records that never had captions (a folder of
  photos without a captions file, ``"captions": []`` in JSONL) are valid.
* A malformed line or entry (bad JSON, not UTF-8, missing ``image``, duplicated id) drops
  that line or entry.

Every drop appends one line to ``Dataset.skipped``: ``"record: <error>"`` or
``"caption: <error>"``, where ``<error>`` is the :class:`BadInputError` message naming the
file and, for line-oriented files, the line. Nothing is dropped silently:
:func:`summarize_skipped` counts the drops by reason (what run and index metadata store) and
:func:`describe_skipped` words that for a log line.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from xmodal.datasets.images import check_image
from xmodal.datasets.record import Record
from xmodal.errors import BadInputError

OnBad = Literal["error", "skip"]

_ON_BAD_VALUES = ("error", "skip")


@dataclass
class Problems:
    """Applies the ``on_bad`` policy: raise the error, or record it and carry on."""

    on_bad: OnBad
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_bad not in _ON_BAD_VALUES:
            raise ValueError(f"on_bad must be 'error' or 'skip', got {self.on_bad!r}")

    def record(self, err: BadInputError) -> None:
        """A record (or line, or entry) is bad: raise, or note it as skipped."""
        if self.on_bad == "error":
            raise err
        self.skipped.append(f"record: {err}")

    def caption(self, err: BadInputError) -> None:
        """One caption is bad: raise, or note it as skipped."""
        if self.on_bad == "error":
            raise err
        self.skipped.append(f"caption: {err}")


@dataclass(frozen=True)
class Source:
    """Where an entry came from, for error messages: a file, optionally a line, and optionally
    a context naming the entry inside the file (``"image 'a.jpg'"``) for whole-file formats."""

    path: Path
    line: int | None = None
    context: str | None = None

    def error(self, reason: str) -> BadInputError:
        text = f"{self.context}: {reason}" if self.context else reason
        return BadInputError(self.path, text, line=self.line)


@dataclass(frozen=True)
class ImageCheck:
    """Load-time image checking options."""

    enabled: bool = True
    max_pixels: int = 0

    def __post_init__(self) -> None:
        if self.max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")


def relative_id(rel: str, where: Source, what: str = "image path") -> str:
    """Normalise a relative path from a listing into a POSIX id; refuse escapes from the root.

    Raises:
        BadInputError: ``rel`` is empty, absolute, or climbs out of the root with ``..``.
    """
    if not isinstance(rel, str) or not rel.strip():
        raise where.error(f"{what} must be a non-empty string, got {rel!r}")
    text = rel.strip().replace("\\", "/")
    pure = PurePosixPath(text)
    drive = len(text) > 1 and text[0].isalpha() and text[1] == ":" and text[2:3] in ("", "/")
    if pure.is_absolute() or drive:
        raise where.error(f"{what} {rel!r} must be relative to the data folder")
    parts = [p for p in pure.parts if p not in ("", ".")]
    if not parts or ".." in parts:
        raise where.error(f"{what} {rel!r} must stay inside the data folder (no '..')")
    return "/".join(parts)


def check_record_image(path: Path, where: Source | None, check: ImageCheck) -> None:
    """Existence always; header + verify + pixel limit when ``check.enabled``.

    Errors name the listing file and line (``where``) when there is one, the image otherwise;
    the image's own error is chained as ``__cause__``.
    """
    try:
        if check.enabled:
            check_image(path, check.max_pixels)
        elif not path.is_file():
            raise BadInputError(path, "image file not found")
    except BadInputError as e:
        if where is None:
            raise
        raise where.error(f"image {path}: {e.reason}") from e


def clean_captions(
    raw: Sequence[Any], where: Source, problems: Problems
) -> tuple[tuple[str, ...], bool]:
    """Validate captions one by one under the skip rule.

    Returns:
        The good captions, and whether the record must be dropped (it had captions and lost
        them all).
    """
    good: list[str] = []
    for k, cap in enumerate(raw):
        if not isinstance(cap, str):
            problems.caption(where.error(f"caption {k + 1} is not a string: {cap!r}"))
        elif not cap.strip():
            problems.caption(where.error(f"caption {k + 1} is empty or whitespace-only"))
        else:
            good.append(cap)
    if raw and not good:
        problems.record(where.error("no valid caption left; record dropped"))
        return (), True
    return tuple(good), False


def check_labels(raw: Any, where: Source) -> tuple[str, ...]:
    """Labels must be a list of non-empty strings (kept in order, duplicates removed)."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) and x.strip() for x in raw):
        raise where.error(f"'labels' must be a list of non-empty strings, got {raw!r}")
    return tuple(dict.fromkeys(raw))


def build_record(
    *,
    rid: str,
    image: Path | None,
    captions: Sequence[Any],
    labels: tuple[str, ...],
    extra: dict[str, Any],
    where: Source | None,
    problems: Problems,
    check: ImageCheck,
) -> Record | None:
    """Check one record's image and captions under the policy; ``None`` when it is dropped."""
    if image is not None:
        try:
            check_record_image(image, where, check)
        except BadInputError as e:
            problems.record(e)
            return None
    cap_where = where if where is not None else Source(image if image is not None else Path(rid))
    good, drop = clean_captions(captions, cap_where, problems)
    if drop:
        return None
    return Record(id=rid, image=image, captions=good, labels=labels, extra=extra)


def sorted_records(records: Iterable[Record]) -> list[Record]:
    """Records in id order (ids are unique, so the order is total)."""
    return sorted(records, key=lambda r: r.id)


def decoded_lines(path: Path, problems: Problems) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` for each line of ``path``, decoded as UTF-8 (BOM allowed).

    A line that is not valid UTF-8 is reported to ``problems`` (naming its number) and
    yielded as an empty string, so line numbers stay true and skipping it is harmless.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadInputError(path, f"cannot read file ({e})") from e
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for n, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.record(BadInputError(path, f"line is not valid UTF-8 ({e.reason})", line=n))
            text = "\n" if raw.endswith(b"\n") else ""
        yield n, text


def absolute(path: str | Path) -> Path:
    """``path`` made absolute and normalised (``..`` folded), without resolving symlinks."""
    return Path(os.path.abspath(path))


def make_check(check_images: bool, max_pixels: int) -> ImageCheck:
    """Validated :class:`ImageCheck` from the public keyword arguments."""
    if not isinstance(check_images, bool):
        raise ValueError(f"check_images must be True or False, got {check_images!r}")
    return ImageCheck(enabled=check_images, max_pixels=max_pixels)


#: Reasons a record or caption is skipped, by the words of its error (first match wins).
_REASONS = (
    ("bad caption", re.compile(r"^caption: ")),
    ("missing image", re.compile(r"image file not found|image folder not found")),
    ("image over a limit", re.compile(r"over the limit|decompression-bomb|\(empty\)")),
    ("unreadable image", re.compile(r"not a readable image|corrupt or truncated")),
    ("no caption left", re.compile(r"no valid caption left")),
    ("not UTF-8", re.compile(r"not valid UTF-8")),
    (
        "malformed entry",
        re.compile(
            r"malformed JSON|expected a JSON object|expected \d+ columns|"
            r"missing the 'image' field|needs |must be a list|"
            r"must be a non-empty string"
        ),
    ),
    ("duplicate id", re.compile(r"duplicated image|repeats image")),
    ("path outside the data folder", re.compile(r"must stay inside|must be relative")),
    ("non-finite features", re.compile(r"non-finite")),
)


def skip_reason(entry: str) -> str:
    """The reason (one of a few fixed words) of a ``Dataset.skipped`` entry."""
    for reason, pattern in _REASONS:
        if pattern.search(entry):
            return reason
    return "other"


def summarize_skipped(skipped: Sequence[str], first: int = 5) -> dict[str, Any]:
    """``{"count", "by_reason": {reason: count}, "first": [the first entries]}`` of what a
    reader skipped (``{}`` when nothing was)."""
    if not skipped:
        return {}
    reasons = Counter(skip_reason(s) for s in skipped)
    return {
        "count": len(skipped),
        "by_reason": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "first": [s.split(": ", 1)[1] if s.startswith(("record: ", "caption: ")) else s
                  for s in skipped[:first]],
    }  # fmt: skip


def describe_skipped(summary: dict[str, Any]) -> str:
    """One paragraph for a log: the count, the reasons and the first few ``file:line``."""
    if not summary:
        return ""
    reasons = ", ".join(f"{n} {reason}" for reason, n in summary["by_reason"].items())
    lines = "\n".join(f"  {s}" for s in summary["first"])
    more = summary["count"] - len(summary["first"])
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return f"skipped {summary['count']} bad input(s) ({reasons}):\n{lines}{tail}"

"""Read a JSON-lines collection: ``data.jsonl`` next to the images it lists.

One JSON object a line::

    {"image": "images/x.jpg", "captions": ["...", "..."], "labels": ["...", "..."], ...}

``image`` (required) is a path relative to the file's folder, and becomes the record id
(POSIX style). ``captions`` (list of strings, may be empty or absent) and ``labels`` (list of
strings) are optional; every other key is kept in ``Record.extra``. Blank lines are ignored.
A line that is not UTF-8, not a JSON object, lacks ``image``, has a wrongly typed field or
repeats an earlier id is a :class:`~xmodal.errors.BadInputError` naming the file and line
(see :mod:`xmodal.datasets._reading` for what ``on_bad="skip"`` drops).
"""

from __future__ import annotations

import json
from pathlib import Path

from xmodal.datasets._reading import (
    OnBad,
    Problems,
    Source,
    absolute,
    build_record,
    check_labels,
    decoded_lines,
    make_check,
    relative_id,
    sorted_records,
)
from xmodal.datasets.images import DEFAULT_MAX_PIXELS
from xmodal.datasets.record import Dataset, Record
from xmodal.errors import BadInputError

__all__ = ["DEFAULT_JSONL_NAME", "read_jsonl"]

#: The file name looked for when :func:`read_jsonl` is given a folder.
DEFAULT_JSONL_NAME = "data.jsonl"

_KNOWN_KEYS = ("image", "captions", "labels")


def read_jsonl(
    path: str | Path,
    *,
    on_bad: OnBad = "error",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    check_images: bool = True,
    name: str | None = None,
) -> Dataset:
    """Read a JSONL collection into a :class:`Dataset` sorted by id.

    Args:
        path: The ``.jsonl`` file, or a folder holding ``data.jsonl``. Image paths are
            relative to the file's folder, which becomes ``Dataset.root``.
        on_bad: ``"error"`` raises on the first bad input; ``"skip"`` drops it and records
            the reason in ``Dataset.skipped``.
        max_pixels: Images with more pixels are bad input.
        check_images: Header-open and ``verify()`` every image (existence is always checked).
        name: Dataset name; default the folder's name.

    Raises:
        BadInputError: a bad line (with ``on_bad="error"``), or an unreadable file.
    """
    path = Path(path)
    file = path / DEFAULT_JSONL_NAME if path.is_dir() else path
    if not file.is_file():
        raise BadInputError(file, "JSONL file not found")
    root = absolute(file.parent)
    problems = Problems(on_bad)
    check = make_check(check_images, max_pixels)
    seen: dict[str, int] = {}
    records: list[Record] = []
    for n, text in decoded_lines(file, problems):
        if not text.strip():
            continue
        where = Source(file, n)
        try:
            rid, entry = _parse_line(text, where)
            if rid in seen:
                raise where.error(f"duplicated image {rid!r} (first listed on line {seen[rid]})")
            labels = check_labels(entry.get("labels"), where)
        except BadInputError as e:
            problems.record(e)
            continue
        seen[rid] = n
        extra = {k: v for k, v in entry.items() if k not in _KNOWN_KEYS}
        rec = build_record(
            rid=rid,
            image=root / rid,
            captions=entry.get("captions") or [],
            labels=labels,
            extra=extra,
            where=where,
            problems=problems,
            check=check,
        )
        if rec is not None:
            records.append(rec)
    return Dataset(
        name=name or root.name,
        root=root,
        records=sorted_records(records),
        skipped=problems.skipped,
    )


def _parse_line(text: str, where: Source) -> tuple[str, dict]:
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as e:
        raise where.error(f"malformed JSON ({e.msg}, column {e.colno})") from e
    if not isinstance(entry, dict):
        raise where.error(f"expected a JSON object, got {type(entry).__name__}")
    if "image" not in entry:
        raise where.error("missing the 'image' field")
    rid = relative_id(entry["image"], where)
    captions = entry.get("captions")
    if captions is not None and not isinstance(captions, list):
        raise where.error(f"'captions' must be a list of strings, got {captions!r}")
    return rid, entry

"""Read a folder of images, with an optional captions CSV.

With a captions file (``captions.csv``/``captions.txt`` in the folder, or ``captions=``), one
row per caption and several rows per image::

    image,caption
    dog.jpg,A dog runs on the grass .
    dog.jpg,A brown dog outside .

The header names the columns (case-insensitive): the image column is one of ``image``,
``image_name``, ``filename``, ``file_name``, ``file``; the caption column one of ``caption``,
``comment``, ``text``. Delimiter ``,``, tab or ``|`` (guessed from the header); spaces right
after a delimiter are ignored (``img.jpg| 0| A dog``). Blank rows are ignored. Image names are
relative to the folder read, or, when the first one is not there, to its ``images/`` or
``Images/`` subfolder (the Kaggle Flickr8k layout). The CSV defines the records: images not
listed in it are not read. Record ids are image paths relative to the folder given
(``Dataset.root``), POSIX style.

Without a captions file every image under the folder (recursively; hidden files and folders
left out; by suffix, see :data:`~xmodal.datasets.images.IMAGE_SUFFIXES`) becomes a record with
no captions — a photo collection to index.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from xmodal.datasets._reading import (
    ImageCheck,
    OnBad,
    Problems,
    Source,
    absolute,
    build_record,
    decoded_lines,
    make_check,
    relative_id,
    sorted_records,
)
from xmodal.datasets.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES
from xmodal.datasets.record import Dataset, Record
from xmodal.errors import BadInputError

__all__ = ["CAPTION_FILE_NAMES", "find_captions_file", "read_folder"]

#: Captions files looked for, in order, when a folder is read without ``captions=``.
CAPTION_FILE_NAMES = ("captions.csv", "captions.txt", "captions.tsv")

_IMAGE_COLUMNS = ("image", "image_name", "filename", "file_name", "file")
_CAPTION_COLUMNS = ("caption", "comment", "text")


def find_captions_file(folder: Path) -> Path | None:
    """The folder's captions file by the names in :data:`CAPTION_FILE_NAMES`, if any."""
    for fname in CAPTION_FILE_NAMES:
        if (folder / fname).is_file():
            return folder / fname
    return None


def read_folder(
    path: str | Path,
    *,
    captions: str | Path | None = None,
    on_bad: OnBad = "error",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    check_images: bool = True,
    name: str | None = None,
) -> Dataset:
    """Read a folder of images, captioned by a CSV when there is one.

    Args:
        path: The folder (``Dataset.root``).
        captions: The captions CSV (it may live anywhere; its image names are still relative
            to ``path``); default the folder's own (:func:`find_captions_file`), or none,
            which gives uncaptioned records for every image found.
        on_bad, max_pixels, check_images: As in :func:`xmodal.datasets.read_jsonl`.
        name: Dataset name; default the folder's name.

    Raises:
        BadInputError: a missing folder, a CSV without the needed columns, or (with
            ``on_bad="error"``) a bad row or image, naming the file and line.
    """
    root = Path(path)
    if not root.is_dir():
        raise BadInputError(root, "image folder not found")
    root = absolute(root)
    problems = Problems(on_bad)
    check = make_check(check_images, max_pixels)
    csv_path = absolute(captions) if captions is not None else find_captions_file(root)
    if csv_path is None:
        records = _scan_images(root, problems, check)
    else:
        records = _read_captions_csv(root, csv_path, problems, check)
    return Dataset(
        name=name or root.name,
        root=root,
        records=sorted_records(records),
        skipped=problems.skipped,
    )


def _scan_images(root: Path, problems: Problems, check: ImageCheck) -> list[Record]:
    records: list[Record] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            if fname.startswith(".") or Path(fname).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            image = Path(dirpath) / fname
            rid = image.relative_to(root).as_posix()
            rec = build_record(
                rid=rid,
                image=image,
                captions=[],
                labels=(),
                extra={},
                where=None,
                problems=problems,
                check=check,
            )
            if rec is not None:
                records.append(rec)
    return records


def _column(header: list[str], names: tuple[str, ...], csv_path: Path, what: str) -> int:
    norm = [h.strip().lower() for h in header]
    for n in names:
        if n in norm:
            return norm.index(n)
    raise BadInputError(
        csv_path, f"header {header!r} has no {what} column (one of {', '.join(names)})", line=1
    )


def _read_captions_csv(
    root: Path, csv_path: Path, problems: Problems, check: ImageCheck
) -> list[Record]:
    if not csv_path.is_file():
        raise BadInputError(csv_path, "captions file not found")
    lines = [text for _, text in decoded_lines(csv_path, problems)]
    if not lines or not lines[0].strip():
        raise BadInputError(csv_path, "captions file is empty (needs an image,caption header)")
    delimiter = max(",\t|", key=lines[0].count)
    reader = csv.reader(io.StringIO("".join(lines)), delimiter=delimiter, skipinitialspace=True)
    header = next(reader)
    i_img = _column(header, _IMAGE_COLUMNS, csv_path, "image")
    i_cap = _column(header, _CAPTION_COLUMNS, csv_path, "caption")

    rows: dict[str, list[tuple[int, str]]] = {}  # image name -> [(line, caption)]
    first_line: dict[str, int] = {}
    line_end = reader.line_num
    for row in reader:
        line = line_end + 1
        line_end = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        where = Source(csv_path, line)
        try:
            if len(row) <= max(i_img, i_cap):
                raise where.error(f"expected {len(header)} columns, got {len(row)}: {row!r}")
            rel = relative_id(row[i_img], where)
        except BadInputError as e:
            problems.record(e)
            continue
        rows.setdefault(rel, []).append((line, row[i_cap]))
        first_line.setdefault(rel, line)

    image_dir = _image_dir(root, next(iter(rows), None))
    records: list[Record] = []
    for rel, caps in rows.items():
        image = image_dir / rel
        where = Source(csv_path, first_line[rel])
        good: list[str] = []
        for line, cap in caps:
            if cap.strip():
                good.append(cap)
            else:
                problems.caption(
                    Source(csv_path, line).error(f"empty or whitespace-only caption for {rel!r}")
                )
        if not good:
            problems.record(where.error(f"no valid caption left for {rel!r}; record dropped"))
            continue
        rid = image.relative_to(root).as_posix()
        rec = build_record(
            rid=rid,
            image=image,
            captions=good,
            labels=(),
            extra={},
            where=where,
            problems=problems,
            check=check,
        )
        if rec is not None:
            records.append(rec)
    return records


def _image_dir(root: Path, first: str | None) -> Path:
    if first is not None and not (root / first).is_file():
        for sub in ("images", "Images"):
            if (root / sub / first).is_file():
                return root / sub
    return root

"""One entry point for every format: :func:`load_dataset` picks the reader from the path.

Auto-detection (``format="auto"``):

=============================================  ==========
path                                           format
=============================================  ==========
folder with ``data.jsonl``                     ``jsonl``
any other folder (captions CSV or none)        ``folder``
``*.jsonl`` file                               ``jsonl``
``*.json`` with ``images[].file_name`` +       ``coco``
``annotations``
``*.json`` with ``images[].filename`` +        ``karpathy``
``images[].sentences``
``*.csv`` / ``*.tsv`` / ``*.txt`` file         ``folder`` (that CSV, images beside it)
``*.mat`` / ``*.h5`` / ``*.hdf5``              ``mat``
=============================================  ==========
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from xmodal.datasets._reading import OnBad, describe_skipped, summarize_skipped
from xmodal.datasets.coco import _read_coco_data, is_coco_captions
from xmodal.datasets.folder import read_folder
from xmodal.datasets.images import DEFAULT_MAX_PIXELS
from xmodal.datasets.jsonl import DEFAULT_JSONL_NAME, read_jsonl
from xmodal.datasets.karpathy import _read_karpathy_data, is_karpathy
from xmodal.datasets.matfile import MAT_SUFFIXES, read_mat
from xmodal.datasets.record import Dataset
from xmodal.errors import BadInputError
from xmodal.integrity import read_json_file

__all__ = ["FORMATS", "Format", "detect_format", "load_dataset"]

log = logging.getLogger("xmodal.datasets")

Format = Literal["auto", "jsonl", "coco", "karpathy", "folder", "mat"]

#: Format names :func:`load_dataset` accepts (``"h5"`` is an alias of ``"mat"``).
FORMATS = ("auto", "jsonl", "coco", "karpathy", "folder", "mat", "h5")

_CSV_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})

# Options each reader accepts beyond the common ones.
_OPTIONS = {
    "jsonl": frozenset(),
    "coco": frozenset({"instances", "image_root"}),
    "karpathy": frozenset({"image_root"}),
    "folder": frozenset({"captions"}),
    "mat": frozenset({"image_key", "text_key", "label_key", "names_key"}),
}


def detect_format(path: str | Path) -> str:
    """The format :func:`load_dataset` would use for ``path`` (parses ``.json`` files).

    Raises:
        BadInputError: the path does not exist or matches no format.
    """
    return _detect(Path(path))[0]


def _detect(path: Path) -> tuple[str, Any]:
    if path.is_dir():
        return ("jsonl" if (path / DEFAULT_JSONL_NAME).is_file() else "folder"), None
    if not path.is_file():
        raise BadInputError(path, "no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl", None
    if suffix in MAT_SUFFIXES:
        return "mat", None
    if suffix in _CSV_SUFFIXES:
        return "folder", None
    if suffix == ".json":
        data = read_json_file(path)
        if is_karpathy(data):
            return "karpathy", data
        if is_coco_captions(data):
            return "coco", data
        raise BadInputError(
            path,
            "JSON is neither a COCO captions file nor a Karpathy split file; "
            "pass format= explicitly",
        )
    raise BadInputError(path, f"cannot tell the format of a {suffix or 'suffix-less'} file")


def load_dataset(
    path: str | Path,
    format: str = "auto",
    *,
    on_bad: OnBad = "error",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    check_images: bool = True,
    name: str | None = None,
    **options: Any,
) -> Dataset:
    """Read any supported collection into a :class:`Dataset` (records sorted by id).

    Args:
        path: A folder, or a ``.jsonl``/``.json``/``.csv``/``.mat``/``.h5`` file.
        format: ``"auto"`` (see the module docstring), ``"jsonl"``, ``"coco"``,
            ``"karpathy"``, ``"folder"`` or ``"mat"`` (alias ``"h5"``).
        on_bad: ``"error"`` raises :class:`~xmodal.errors.BadInputError` on the first bad
            input; ``"skip"`` drops it, lists it in ``Dataset.skipped`` and logs a warning
            (logger ``xmodal.datasets``) with the count by reason and the first few.
        max_pixels: Images with more pixels are bad input.
        check_images: Header-open and ``verify()`` each image at load time.
        name: Dataset name (default from the path).
        **options: Reader-specific: ``instances``, ``image_root`` (coco); ``image_root``
            (karpathy); ``captions`` (folder); ``image_key``, ``text_key``, ``label_key``,
            ``names_key`` (mat).

    Example:
        >>> from xmodal.demo import demo_data_path   # the OpenMoji set shipped with xmodal
        >>> ds = load_dataset(demo_data_path(), check_images=False)
        >>> len(ds), ds.records[0].id, ds.records[0].labels[:2]
        (2464, 'images/0023-FE0F-20E3.png', ('symbols', 'keycap'))

    Raises:
        ValueError: unknown format or an option the chosen reader does not take.
        BadInputError: unreadable or bad input, naming the file (and line).
    """
    ds = _dispatch(Path(path), format, on_bad, max_pixels, check_images, name, options)
    if ds.skipped:  # nothing is dropped silently: every caller (and the CLI) hears of it
        log.warning("%s: %s", path, describe_skipped(summarize_skipped(ds.skipped)))
    return ds


def _dispatch(
    path: Path,
    format: str,
    on_bad: OnBad,
    max_pixels: int,
    check_images: bool,
    name: str | None,
    options: dict[str, Any],
) -> Dataset:
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    fmt = "mat" if format == "h5" else format
    data = None
    if fmt == "auto":
        fmt, data = _detect(path)
    unknown = set(options) - _OPTIONS[fmt]
    if unknown:
        raise ValueError(
            f"option(s) {', '.join(sorted(unknown))} not accepted by the {fmt} reader "
            f"(accepted: {', '.join(sorted(_OPTIONS[fmt])) or 'none'})"
        )
    common: dict[str, Any] = {
        "on_bad": on_bad,
        "max_pixels": max_pixels,
        "check_images": check_images,
    }
    if fmt == "jsonl":
        return read_jsonl(path, name=name, **common)
    if fmt == "folder":
        if path.is_file():
            options.setdefault("captions", path)
            path = path.parent
        return read_folder(path, name=name, **common, **options)
    if fmt == "mat":
        return read_mat(path, on_bad=on_bad, name=name, **options)
    if data is None:
        data = read_json_file(path)
    if fmt == "coco":
        return _read_coco_data(
            data,
            path,
            instances=options.get("instances"),
            image_root=options.get("image_root"),
            name=name,
            **common,
        )
    return _read_karpathy_data(
        data, path, image_root=options.get("image_root"), name=name, **common
    )

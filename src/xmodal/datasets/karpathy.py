"""Read a Karpathy split file (``dataset_flickr30k.json``, ``dataset_coco.json``, ...).

Format::

    {"dataset": "flickr30k",
     "images": [{"filename": "1000092795.jpg", "filepath": "val2014",   # filepath optional
                 "split": "train",                                      # train/val/test/restval
                 "sentences": [{"raw": "Two young guys ...", "tokens": [...]}, ...]}, ...]}

Record id = ``filepath/filename`` (or ``filename``), POSIX style, relative to ``image_root``;
captions are the sentences' ``raw`` text (the ``tokens`` joined by spaces when ``raw`` is
missing); the split goes to ``extra["split"]`` (and ``imgid``/``cocoid`` when present).
:func:`karpathy_split` turns those fields into a :class:`~xmodal.datasets.splits.Split`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xmodal.datasets._reading import (
    OnBad,
    Problems,
    Source,
    absolute,
    build_record,
    make_check,
    relative_id,
    sorted_records,
)
from xmodal.datasets.images import DEFAULT_MAX_PIXELS
from xmodal.datasets.record import Dataset, Record
from xmodal.datasets.splits import Split
from xmodal.errors import BadInputError
from xmodal.integrity import read_json_file

__all__ = ["is_karpathy", "karpathy_split", "read_karpathy"]

_KEEP = ("imgid", "cocoid", "sentids")


def is_karpathy(data: Any) -> bool:
    """Whether parsed JSON looks like a Karpathy split file."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        return False
    first = data["images"][0] if data["images"] else None
    return isinstance(first, dict) and "filename" in first and "sentences" in first


def read_karpathy(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    on_bad: OnBad = "error",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    check_images: bool = True,
    name: str | None = None,
) -> Dataset:
    """Read a Karpathy split JSON into a :class:`Dataset` sorted by id.

    Args:
        path: The ``dataset_*.json`` file.
        image_root: Folder the image paths are relative to. Default: the JSON's folder if the
            first listed image is there, else its ``images/`` subfolder if the image is
            there, else the JSON's folder.
        on_bad, max_pixels, check_images: As in :func:`xmodal.datasets.read_jsonl`.
        name: Dataset name; default the ``dataset`` field, else the JSON's stem without
            ``dataset_``.

    Raises:
        BadInputError: a malformed file, or (with ``on_bad="error"``) a bad entry.
    """
    path = Path(path)
    return _read_karpathy_data(
        read_json_file(path),
        path,
        image_root=image_root,
        on_bad=on_bad,
        max_pixels=max_pixels,
        check_images=check_images,
        name=name,
    )


def _read_karpathy_data(
    data: Any,
    path: Path,
    *,
    image_root: str | Path | None,
    on_bad: OnBad,
    max_pixels: int,
    check_images: bool,
    name: str | None,
) -> Dataset:
    problems = Problems(on_bad)
    check = make_check(check_images, max_pixels)
    src = Source(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise src.error("not a Karpathy split file (needs an 'images' list)")

    entries: list[tuple[str, list[Any], dict[str, Any]]] = []
    seen: set[str] = set()
    for k, img in enumerate(data["images"]):
        try:
            rid, caps, extra = _parse_entry(img, k, src)
            if rid in seen:
                raise src.error(f"images[{k}] repeats image {rid!r}")
        except BadInputError as e:
            problems.record(e)
            continue
        seen.add(rid)
        entries.append((rid, caps, extra))

    root = absolute(_image_root(path, image_root, entries[0][0] if entries else None))
    records: list[Record] = []
    for rid, caps, extra in entries:
        rec = build_record(
            rid=rid,
            image=root / rid,
            captions=caps,
            labels=(),
            extra=extra,
            where=Source(path, context=f"image {rid!r}"),
            problems=problems,
            check=check,
        )
        if rec is not None:
            records.append(rec)
    default_name = data.get("dataset") if isinstance(data.get("dataset"), str) else None
    return Dataset(
        name=name or default_name or path.stem.removeprefix("dataset_"),
        root=root,
        records=sorted_records(records),
        skipped=problems.skipped,
    )


def _parse_entry(img: Any, k: int, src: Source) -> tuple[str, list[Any], dict[str, Any]]:
    if not isinstance(img, dict) or not isinstance(img.get("filename"), str):
        raise src.error(f"images[{k}] needs a string 'filename'")
    fp = img.get("filepath")
    if fp is not None and not isinstance(fp, str):
        raise src.error(f"images[{k}].filepath must be a string, got {fp!r}")
    rel = f"{fp}/{img['filename']}" if fp else img["filename"]
    rid = relative_id(rel, src, what=f"images[{k}] path")
    split = img.get("split")
    if not isinstance(split, str) or not split:
        raise src.error(f"images[{k}] ({rid}) needs a string 'split', got {split!r}")
    sents = img.get("sentences", [])
    if not isinstance(sents, list):
        raise src.error(f"images[{k}] ({rid}): 'sentences' must be a list")
    caps: list[Any] = []
    for s in sents:
        if isinstance(s, dict) and "raw" in s:
            caps.append(s["raw"])
        elif isinstance(s, dict) and isinstance(s.get("tokens"), list):
            caps.append(" ".join(str(t) for t in s["tokens"]))
        else:
            caps.append(s)  # not a sentence object: reported as a bad caption
    extra: dict[str, Any] = {"split": split}
    extra.update({key: img[key] for key in _KEEP if key in img})
    return rid, caps, extra


def _image_root(path: Path, image_root: str | Path | None, first: str | None) -> Path:
    if image_root is not None:
        return Path(image_root)
    folder = path.parent
    if first is None or (folder / first).is_file():
        return folder
    if (folder / "images" / first).is_file():
        return folder / "images"
    return folder


def karpathy_split(ds: Dataset, *, restval: str = "train") -> Split:
    """The split stored in the records' ``extra["split"]`` (as read by :func:`read_karpathy`).

    Args:
        ds: A dataset whose records all carry ``extra["split"]``.
        restval: Where COCO's ``restval`` images go: ``"train"`` (the usual practice, as in
            VSE++ and later work), ``"val"``, ``"test"`` or ``"drop"``.

    Raises:
        ValueError: a record without a split, an unknown split name, or a bad ``restval``.
    """
    if restval not in ("train", "val", "test", "drop"):
        raise ValueError(f"restval must be 'train', 'val', 'test' or 'drop', got {restval!r}")
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for r in ds.records:
        split = r.extra.get("split")
        if split == "restval":
            if restval == "drop":
                continue
            split = restval
        if split not in parts:
            raise ValueError(
                f"record {r.id!r} has split {split!r}; expected train, val, test or restval"
            )
        parts[split].append(r.id)
    return Split(train=sorted(parts["train"]), val=sorted(parts["val"]), test=sorted(parts["test"]))

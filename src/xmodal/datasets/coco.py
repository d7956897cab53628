"""Read a COCO captions collection (``captions_*.json``), optionally with instance labels.

Captions file::

    {"images": [{"id": 1, "file_name": "a.jpg"}, ...],
     "annotations": [{"image_id": 1, "caption": "..."}, ...]}

Every listed image becomes a record (id = ``file_name``, POSIX style, relative to
``image_root``; the COCO integer id is kept in ``extra["coco_id"]``), with its captions in
annotation order. An image without annotations gets no captions.

Instances file (optional, for labels)::

    {"categories": [{"id": 18, "name": "dog"}, ...],
     "annotations": [{"image_id": 1, "category_id": 18}, ...]}

Labels are the distinct category names of an image's instances, sorted. Instances of images
that are not in the captions file are ignored.
"""

from __future__ import annotations

from collections import defaultdict
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
from xmodal.errors import BadInputError
from xmodal.integrity import read_json_file

__all__ = ["is_coco_captions", "read_coco"]


def is_coco_captions(data: Any) -> bool:
    """Whether parsed JSON looks like a COCO captions file."""
    if not isinstance(data, dict):
        return False
    images, anns = data.get("images"), data.get("annotations")
    if not isinstance(images, list) or not isinstance(anns, list):
        return False
    first = images[0] if images else {}
    return isinstance(first, dict) and ("file_name" in first or not images)


def read_coco(
    path: str | Path,
    *,
    instances: str | Path | None = None,
    image_root: str | Path | None = None,
    on_bad: OnBad = "error",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    check_images: bool = True,
    name: str | None = None,
) -> Dataset:
    """Read a COCO captions JSON (and optional instances JSON) into a :class:`Dataset`.

    Args:
        path: The captions JSON.
        instances: The matching instances JSON, for labels.
        image_root: Folder the ``file_name`` entries are relative to. Default: the first of
            the JSON's folder, its ``images/`` subfolder, and for ``captions_<split>.json`` the
            ``<split>/`` folder beside the JSON or beside its folder (COCO's own layout), in
            which the first listed image exists; the JSON's folder if none has it.
        on_bad, max_pixels, check_images: As in :func:`xmodal.datasets.read_jsonl`.
        name: Dataset name; default the JSON's stem.

    Raises:
        BadInputError: a malformed file, or (with ``on_bad="error"``) a bad entry, naming the
            file and the entry.
    """
    path = Path(path)
    data = read_json_file(path)
    return _read_coco_data(
        data,
        path,
        instances=instances,
        image_root=image_root,
        on_bad=on_bad,
        max_pixels=max_pixels,
        check_images=check_images,
        name=name,
    )


def _read_coco_data(
    data: Any,
    path: Path,
    *,
    instances: str | Path | None,
    image_root: str | Path | None,
    on_bad: OnBad,
    max_pixels: int,
    check_images: bool,
    name: str | None,
) -> Dataset:
    problems = Problems(on_bad)
    check = make_check(check_images, max_pixels)
    src = Source(path)
    if not is_coco_captions(data):
        raise src.error(
            "not a COCO captions file (needs 'images' with 'file_name' and 'annotations')"
        )

    images: dict[Any, str] = {}
    ids_seen: set[str] = set()
    for k, entry in enumerate(data["images"]):
        try:
            if not isinstance(entry, dict) or not _is_key(entry.get("id")):
                raise src.error(f"images[{k}] needs an integer or string 'id', got {entry!r}")
            if "file_name" not in entry:
                raise src.error(f"images[{k}] needs 'file_name', got {entry!r}")
            rid = relative_id(entry["file_name"], src, what=f"images[{k}].file_name")
            if entry["id"] in images or rid in ids_seen:
                raise src.error(f"images[{k}] repeats image id {entry['id']!r} or file {rid!r}")
        except BadInputError as e:
            problems.record(e)
            continue
        images[entry["id"]] = rid
        ids_seen.add(rid)

    captions: dict[Any, list[Any]] = defaultdict(list)
    for k, ann in enumerate(data["annotations"]):
        try:
            if not isinstance(ann, dict) or not _is_key(ann.get("image_id")):
                raise src.error(f"annotations[{k}] needs 'image_id' and 'caption', got {ann!r}")
            if "caption" not in ann:
                raise src.error(f"annotations[{k}] needs 'image_id' and 'caption', got {ann!r}")
            if ann["image_id"] not in images:
                raise src.error(f"annotations[{k}] refers to unknown image_id {ann['image_id']!r}")
        except BadInputError as e:
            problems.record(e)
            continue
        captions[ann["image_id"]].append(ann["caption"])

    labels = _read_instances(Path(instances), images) if instances is not None else {}
    root = absolute(_image_root(path, image_root, list(images.values())))

    records: list[Record] = []
    for coco_id, rid in images.items():
        rec = build_record(
            rid=rid,
            image=root / rid,
            captions=captions.get(coco_id, []),
            labels=labels.get(coco_id, ()),
            extra={"coco_id": coco_id},
            where=Source(path, context=f"image {rid!r} (id {coco_id!r})"),
            problems=problems,
            check=check,
        )
        if rec is not None:
            records.append(rec)
    return Dataset(
        name=name or path.stem,
        root=root,
        records=sorted_records(records),
        skipped=problems.skipped,
    )


def _read_instances(path: Path, images: dict[Any, str]) -> dict[Any, tuple[str, ...]]:
    """Category names per image id, sorted; a malformed instances file is an error."""
    data = read_json_file(path)
    src = Source(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise src.error("not a COCO instances file (needs 'annotations' and 'categories')")
    cats = data.get("categories")
    if not isinstance(cats, list):
        raise src.error("not a COCO instances file (needs 'annotations' and 'categories')")
    names: dict[Any, str] = {}
    for k, c in enumerate(cats):
        if not (isinstance(c, dict) and _is_key(c.get("id")) and isinstance(c.get("name"), str)):
            raise src.error(f"categories[{k}] needs 'id' and a string 'name', got {c!r}")
        names[c["id"]] = c["name"]
    per_image: dict[Any, set[str]] = defaultdict(set)
    for k, ann in enumerate(data["annotations"]):
        if (
            not isinstance(ann, dict)
            or not _is_key(ann.get("image_id"))
            or not _is_key(ann.get("category_id"))
        ):
            raise src.error(f"annotations[{k}] needs 'image_id' and 'category_id', got {ann!r}")
        if ann["category_id"] not in names:
            raise src.error(f"annotations[{k}] has unknown category_id {ann['category_id']!r}")
        if ann["image_id"] in images:
            per_image[ann["image_id"]].add(names[ann["category_id"]])
    return {i: tuple(sorted(s)) for i, s in per_image.items()}


def _is_key(value: Any) -> bool:
    """COCO ids are integers (some tools write strings); anything else is malformed."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _image_root(path: Path, image_root: str | Path | None, rel_paths: list[str]) -> Path:
    if image_root is not None:
        return Path(image_root)
    folder = path.parent
    candidates = [folder, folder / "images"]
    if path.stem.startswith("captions_"):
        split = path.stem[len("captions_") :]
        candidates += [folder / split, folder.parent / split]
    if rel_paths:
        for c in candidates:
            if (c / rel_paths[0]).is_file():
                return c
    return folder

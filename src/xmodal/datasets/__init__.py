"""Read image–text collections into one record type, and split them deterministically.

Readers (all return a :class:`Dataset` whose records are sorted by id; ids are image paths
relative to the data root, POSIX style):

* :func:`load_dataset` — auto-detects the format from the path and dispatches to:
* :func:`read_jsonl` — ``data.jsonl`` + images (the project's own format)
* :func:`read_coco` — COCO captions JSON (+ instances JSON for labels)
* :func:`read_karpathy` — Karpathy split JSON (``dataset_flickr30k.json``, ...)
* :func:`read_folder` — a folder of images, with or without a captions CSV
* :func:`read_mat` — ``.mat`` (v7, v7.3) / ``.h5`` precomputed features + tags + labels

Bad input raises :class:`~xmodal.errors.BadInputError` naming the file (and line); with
``on_bad="skip"`` it is dropped and listed in ``Dataset.skipped`` instead. An image problem
drops its record; a bad caption drops only that caption unless it was the record's last one.

Splits: :class:`Split`, :func:`split_sorted`, :func:`split_random`, :func:`karpathy_split`.
"""

from xmodal.datasets._reading import OnBad, describe_skipped, summarize_skipped
from xmodal.datasets.coco import read_coco
from xmodal.datasets.folder import read_folder
from xmodal.datasets.images import (
    DEFAULT_MAX_PIXELS,
    ImageLimits,
    check_image,
    load_image,
    to_rgb,
)
from xmodal.datasets.jsonl import read_jsonl
from xmodal.datasets.karpathy import karpathy_split, read_karpathy
from xmodal.datasets.loader import FORMATS, detect_format, load_dataset
from xmodal.datasets.matfile import read_mat
from xmodal.datasets.record import Dataset, Record
from xmodal.datasets.splits import FLICKR8K_1K_SIZES, Split, split_random, split_sorted
from xmodal.errors import BadInputError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FLICKR8K_1K_SIZES",
    "FORMATS",
    "BadInputError",
    "Dataset",
    "ImageLimits",
    "OnBad",
    "Record",
    "Split",
    "check_image",
    "describe_skipped",
    "detect_format",
    "karpathy_split",
    "load_dataset",
    "load_image",
    "read_coco",
    "read_folder",
    "read_jsonl",
    "read_karpathy",
    "read_mat",
    "split_random",
    "split_sorted",
    "summarize_skipped",
    "to_rgb",
]

"""Read feature collections stored as MATLAB ``.mat`` (v7 and v7.3) or plain HDF5 files.

The MIRFlickr-25K / NUS-WIDE style: one file holding, per item, a precomputed image feature
vector, a text (tag) vector and a multi-hot label vector. Each comes from the first key found
of a candidate list (or exactly the key you name)::

    image features  image_features, I_tr, XAll, IAll
    text features   text_features, T_tr, YAll, TAll
    labels          labels, L_tr, LAll
    label names     label_names, names, categories, classes   (else label_0, label_1, ...)

Records have ``image=None``, no captions, labels = the names of the label columns whose value
is positive, and ids ``"00000"``, ``"00001"``, ... (the zero-padded row number, so sorted ids
keep the file's order; ``extra["row"]`` holds the number). Features become
``Dataset.image_features`` / ``Dataset.text_features`` as float32 ``[n, d]``.

Orientation. MATLAB writes column-major arrays: a v7.3 file (HDF5 inside) read with h5py shows
an ``n x d`` MATLAB matrix as ``d x n``, while scipy's v7 reader and HDF5 files written from
Python show ``n x d``. The item count ``n`` is found as the one dimension every array shares;
each array is then turned so that its first axis has length ``n``. When the arrays share both
dimensions (or there is only one array) the file's convention decides: transposed for a
MATLAB v7.3 file (recognised by its ``MATLAB 7.3`` header), as stored otherwise.

A single label column whose values are not all 0/1 (or a 1-D label array) is read as class
indices: the label is ``names[v]`` when names exist, else ``label_<v>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xmodal.datasets._reading import OnBad, Problems, absolute
from xmodal.datasets.record import Dataset, Record
from xmodal.errors import BadInputError

if TYPE_CHECKING:  # h5py and scipy.io are imported on first use: `import xmodal` stays light
    import h5py

__all__ = [
    "IMAGE_KEYS",
    "LABEL_KEYS",
    "MAT_SUFFIXES",
    "NAME_KEYS",
    "TEXT_KEYS",
    "read_mat",
]

IMAGE_KEYS: tuple[str, ...] = ("image_features", "I_tr", "XAll", "IAll")
TEXT_KEYS: tuple[str, ...] = ("text_features", "T_tr", "YAll", "TAll")
LABEL_KEYS: tuple[str, ...] = ("labels", "L_tr", "LAll")
NAME_KEYS: tuple[str, ...] = ("label_names", "names", "categories", "classes")

#: Suffixes :func:`xmodal.datasets.load_dataset` reads with :func:`read_mat`.
MAT_SUFFIXES = frozenset({".mat", ".h5", ".hdf5", ".he5"})

_MATLAB73_MAGIC = b"MATLAB 7.3"

KeySpec = str | Sequence[str]


def read_mat(
    path: str | Path,
    *,
    image_key: KeySpec = IMAGE_KEYS,
    text_key: KeySpec = TEXT_KEYS,
    label_key: KeySpec = LABEL_KEYS,
    names_key: KeySpec = NAME_KEYS,
    on_bad: OnBad = "error",
    name: str | None = None,
) -> Dataset:
    """Read a ``.mat`` (v7 via scipy, v7.3 via h5py) or ``.h5`` feature file.

    Args:
        path: The file.
        image_key, text_key, label_key, names_key: A key name (must exist), or candidate names
            tried in order (none need exist; ``()`` reads nothing for that part). HDF5 keys may
            be paths such as ``"features/image"``.
        on_bad: A row with a non-finite feature value is bad input; ``"skip"`` drops it (from
            the records and both feature arrays) and notes it in ``Dataset.skipped``.
        name: Dataset name; default the file's stem.

    Raises:
        BadInputError: unreadable file, a named key missing, no features or labels at all,
            arrays that are not 2-D or disagree on the item count, or label names that do not
            match the label columns.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "file not found")
    specs = {"image": image_key, "text": text_key, "labels": label_key, "names": names_key}
    arrays, transposed = _load(path, specs)
    names = arrays.pop("names", None)
    if not arrays:
        raise BadInputError(
            path,
            "no image features, text features or labels found; name the keys (tried image "
            f"{_cands(image_key)}, text {_cands(text_key)}, labels {_cands(label_key)})",
        )
    n, arrays = _orient(arrays, transposed, path)
    problems = Problems(on_bad)

    keep = np.ones(n, dtype=bool)
    for part in ("image", "text"):
        if part in arrays:
            arrays[part] = arrays[part].astype(np.float32, copy=False)
            finite = np.isfinite(arrays[part]).all(axis=1)
            for i in np.flatnonzero(~finite):
                problems.record(BadInputError(path, f"row {i} has non-finite {part} features"))
            keep &= finite

    labels = _labels(arrays.get("labels"), names, n, path)
    width = max(5, len(str(max(n - 1, 0))))
    records = [
        Record(id=f"{i:0{width}d}", image=None, labels=labels[i], extra={"row": int(i)})
        for i in np.flatnonzero(keep)
    ]
    rows = np.flatnonzero(keep)
    subset = None if keep.all() else rows
    image = arrays.get("image")
    text = arrays.get("text")
    return Dataset(
        name=name or path.stem,
        root=absolute(path.parent),
        records=records,
        image_features=image if image is None or subset is None else image[subset],
        text_features=text if text is None or subset is None else text[subset],
        skipped=problems.skipped,
    )


def _cands(spec: KeySpec) -> list[str]:
    return [spec] if isinstance(spec, str) else list(spec)


def _pick(spec: KeySpec, available: Any, path: Path, part: str) -> str | None:
    """The key to read for ``part``: the named one (must exist), or the first candidate found."""
    if isinstance(spec, str):
        if spec not in available:
            raise BadInputError(path, f"{part} key {spec!r} not found")
        return spec
    return next((k for k in spec if k in available), None)


# ---------------------------------------------------------------------------------- loading


def _load(path: Path, specs: dict[str, KeySpec]) -> tuple[dict[str, Any], bool]:
    """Raw arrays by part (names as a list of str), and whether the file is transposed."""
    import h5py
    import scipy.io

    if h5py.is_hdf5(path):
        return _load_h5(path, specs)
    try:
        mat = scipy.io.loadmat(path, squeeze_me=False)
    except NotImplementedError as e:  # pragma: no cover - v7.3 is caught by is_hdf5 above
        raise BadInputError(path, f"unsupported MATLAB file ({e})") from e
    except (scipy.io.matlab.MatReadError, ValueError, OSError, TypeError, EOFError) as e:
        raise BadInputError(path, f"not a readable .mat file ({e})") from e
    available = {k for k in mat if not k.startswith("__")}
    out: dict[str, Any] = {}
    for part, spec in specs.items():
        key = _pick(spec, available, path, part)
        if key is None:
            continue
        value = mat[key]
        out[part] = _strings(value, path, key) if part == "names" else _dense(value)
    return out, False


def _dense(value: Any) -> np.ndarray:
    import scipy.sparse

    return value.toarray() if scipy.sparse.issparse(value) else np.asarray(value)


def _load_h5(path: Path, specs: dict[str, KeySpec]) -> tuple[dict[str, Any], bool]:
    import h5py

    with open(path, "rb") as fh:
        transposed = _MATLAB73_MAGIC in fh.read(128)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise BadInputError(path, f"not a readable HDF5 file ({e})") from e
    out: dict[str, Any] = {}
    with f:
        for part, spec in specs.items():
            key = _pick(spec, _H5Keys(f), path, part)
            if key is None:
                continue
            obj = f[key]
            if not isinstance(obj, h5py.Dataset):
                raise BadInputError(path, f"{part} key {key!r} is a group, not an array")
            if part == "names":
                out[part] = _h5_strings(f, obj, path, key)
            elif obj.attrs.get("MATLAB_sparse") is not None:
                raise BadInputError(path, f"{key!r} is a MATLAB sparse matrix; store it full")
            else:
                out[part] = obj[()]
    return out, transposed


class _H5Keys:
    """``key in _H5Keys(f)`` for HDF5 paths, without raising on odd names."""

    def __init__(self, f: h5py.File) -> None:
        self._f = f

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(key) and key in self._f


def _strings(value: Any, path: Path, key: str) -> list[str]:
    """Label names from a scipy-loaded cellstr (object array) or char/str array."""
    arr = np.asarray(value)
    if arr.dtype == object:
        out = []
        for item in arr.ravel(order="F"):
            inner = np.asarray(item).ravel()
            out.append("".join(str(x) for x in inner) if inner.dtype.kind in "US" else str(item))
        return [s.strip() for s in out]
    if arr.dtype.kind == "U":
        return [str(s).strip() for s in arr.ravel()]
    if arr.dtype.kind == "S":
        return [s.decode("utf-8").strip() for s in arr.ravel()]
    raise BadInputError(path, f"label names {key!r} are not strings (dtype {arr.dtype})")


def _h5_strings(f: h5py.File, dset: h5py.Dataset, path: Path, key: str) -> list[str]:
    """Label names from HDF5: byte/str arrays, a MATLAB v7.3 cellstr, or a MATLAB char matrix."""
    import h5py

    mclass = dset.attrs.get("MATLAB_class")
    mclass = mclass.decode() if isinstance(mclass, bytes) else mclass
    data = dset[()]
    if dset.dtype == h5py.ref_dtype:  # MATLAB cell array: references to char arrays
        return [_matlab_chars(f[ref][()]) for ref in np.asarray(data).ravel()]
    if mclass == "char":  # MATLAB char matrix, stored transposed: one column per name
        arr = np.atleast_2d(np.asarray(data))
        return [_matlab_chars(col) for col in arr.T] if arr.ndim == 2 else [_matlab_chars(arr)]
    arr = np.asarray(data)
    if arr.dtype.kind in "SO":
        items = arr.ravel()
        return [(s.decode("utf-8") if isinstance(s, bytes) else str(s)).strip() for s in items]
    if arr.dtype.kind == "U":
        return [str(s).strip() for s in arr.ravel()]
    raise BadInputError(path, f"label names {key!r} are not strings (dtype {arr.dtype})")


def _matlab_chars(codes: Any) -> str:
    return "".join(chr(int(c)) for c in np.asarray(codes).ravel() if int(c) != 0).strip()


# ------------------------------------------------------------------------------ orientation


def _orient(
    arrays: dict[str, Any], transposed: bool, path: Path
) -> tuple[int, dict[str, np.ndarray]]:
    """Turn every array to ``[n, ...]``; see the module docstring for the rule."""
    mats: dict[str, np.ndarray] = {}
    for part, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.ndim == 1 and part == "labels":
            arr = arr[:, None] if not transposed else arr[None, :]
        if arr.ndim != 2:
            raise BadInputError(path, f"{part} array must be 2-D, got shape {arr.shape}")
        mats[part] = arr
    shapes = {part: arr.shape for part, arr in mats.items()}
    common = set.intersection(*(set(s) for s in shapes.values()))
    if not common:
        raise BadInputError(path, f"arrays disagree on the number of items: shapes {shapes}")
    if len(common) == 1:
        (n,) = common
    else:
        first = next(iter(mats.values()))
        n = first.shape[1] if transposed else first.shape[0]
    out = {}
    for part, arr in mats.items():
        preferred = arr.T if transposed else arr
        out[part] = preferred if preferred.shape[0] == n else preferred.T
    return int(n), out


# ----------------------------------------------------------------------------------- labels


def _labels(
    mat: np.ndarray | None, names: list[str] | None, n: int, path: Path
) -> list[tuple[str, ...]]:
    if mat is None:
        if names is not None:
            raise BadInputError(path, "label names found but no label matrix")
        return [()] * n
    if not np.issubdtype(mat.dtype, np.number) and mat.dtype != bool:
        raise BadInputError(path, f"labels must be numeric, got dtype {mat.dtype}")
    values = np.asarray(mat, dtype=np.float64)
    if not np.isfinite(values).all():
        raise BadInputError(path, "labels hold non-finite values")
    if values.shape[1] == 1 and not np.isin(values, (0.0, 1.0)).all():
        return _class_labels(values[:, 0], names, path)
    n_cols = values.shape[1]
    if names is None:
        names = [f"label_{j}" for j in range(n_cols)]
    elif len(names) != n_cols:
        raise BadInputError(path, f"{len(names)} label names for {n_cols} label columns")
    col_names = np.asarray(names, dtype=object)
    return [tuple(col_names[np.flatnonzero(row > 0)]) for row in values]


def _class_labels(values: np.ndarray, names: list[str] | None, path: Path) -> list[tuple[str, ...]]:
    if not np.array_equal(values, np.round(values)):
        raise BadInputError(path, "a single label column must hold 0/1 flags or class indices")
    idx = values.astype(np.int64)
    if names is None:
        return [(f"label_{v}",) for v in idx]
    bad = idx[(idx < 0) | (idx >= len(names))]
    if bad.size:
        raise BadInputError(path, f"class index {bad[0]} has no name among {len(names)} names")
    return [(names[v],) for v in idx]

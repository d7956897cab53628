"""The run directory: everything needed to reproduce, inspect and reuse a training run.

Layout::

    RUN_DIR/
      config.json     method, its options, trainer options, encoders, data, split rule, versions
      split.json      the ids of train / val / test
      history.jsonl   one line per epoch (losses, validation metrics, seconds), appended as it goes
      model.pt        state dict of the checkpoint selected on validation (rewritten atomically)
      metrics.json    validation metrics of the selected checkpoint (+ test, once evaluated)
      training.png    loss and validation curves
      text_encoder.state  a fitted text encoder's state (tfidf, bow), JSON + .npy
      query_bank.npz  training-split embeddings for query-bank normalisation (runs trained
                      with ``query_bank_beta`` > 0; :mod:`xmodal.querybank`)
      checksums.json  size and SHA-256 of every file a run is loaded from (config, split,
                      checkpoint, text encoder state), written last and atomically

Loading checks ``checksums.json`` first (a missing, truncated or altered file is an error naming
it), reads JSON and ``torch.load(weights_only=True)`` only, and turns every failure to read a
file into a :class:`~xmodal.errors.BadInputError` naming it. A run without ``checksums.json``
(training never finished, or an older xmodal wrote it) loads with a warning.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from xmodal import __version__
from xmodal.errors import BadInputError
from xmodal.integrity import check_files, file_entry, read_json_file
from xmodal.io import atomic_write, write_json_atomic
from xmodal.methods import Method, build_method
from xmodal.querybank import QUERY_BANK_FILE, QueryBank, load_query_bank
from xmodal.training.config import TrainConfig

__all__ = [
    "CHECKSUMS",
    "QUERY_BANK",
    "RunConfig",
    "RunWriter",
    "load_method",
    "load_run_query_bank",
    "read_run_config",
    "verify_run",
    "write_checksums",
]

CONFIG, HISTORY, MODEL, METRICS, SPLIT, PLOT = (
    "config.json",
    "history.jsonl",
    "model.pt",
    "metrics.json",
    "split.json",
    "training.png",
)
#: The run's integrity manifest, and the files it covers (those that loading reads).
CHECKSUMS = "checksums.json"
#: Query-bank normalisation's training embeddings (only runs trained with ``query_bank_beta``).
QUERY_BANK = QUERY_BANK_FILE
LOADED_FILES = (CONFIG, SPLIT, MODEL, "text_encoder.state", QUERY_BANK)
_RUN_FORMAT = "xmodal-run/1"


@dataclass
class RunConfig:
    """What a run was made from (``config.json``)."""

    method: str
    method_options: dict[str, Any]
    train: dict[str, Any]
    image_encoder: str
    text_encoder: str
    data: str
    image_dim: int
    text_dim: int
    split: dict[str, Any] = field(default_factory=dict)
    xmodal_version: str = __version__
    #: Bad input skipped while reading the data (``on_bad="skip"``): count, by reason, first few.
    skipped: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None  # the preset the options started from (they are all recorded)
    target: str | None = None  # the unpaired target dataset of a transfer method

    def train_config(self) -> TrainConfig:
        """The trainer options as a :class:`TrainConfig`."""
        return TrainConfig(**self.train)


def read_run_config(run_dir: str | Path) -> RunConfig:
    """Read ``config.json`` of a run, with a clear error when the folder is not a run.

    Raises:
        FileNotFoundError: no ``config.json``.
        BadInputError: malformed JSON (naming the line) or fields a run config does not have.
    """
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not an xmodal run directory (no {CONFIG})")
    raw = read_json_file(path)
    if not isinstance(raw, dict):
        raise BadInputError(path, f"a run config is a JSON object, not {type(raw).__name__}")
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise BadInputError(path, f"unknown run config field(s) {unknown}")
    try:
        return RunConfig(**raw)
    except TypeError as e:  # a required field is missing
        raise BadInputError(path, f"not a run config ({e})") from e


def write_checksums(run_dir: str | Path) -> Path:
    """Write ``checksums.json`` (size and SHA-256 of the files loading reads), atomically."""
    run_dir = Path(run_dir)
    files = {n: file_entry(run_dir / n) for n in LOADED_FILES if (run_dir / n).is_file()}
    return write_json_atomic(
        run_dir / CHECKSUMS, {"format": _RUN_FORMAT, "files": files}, sort_keys=True
    )


def verify_run(run_dir: str | Path, checksums: bool = True) -> bool:
    """Check the run's files against ``checksums.json``; ``False`` (and a warning) when the run
    has none.

    Raises:
        BadInputError: naming the first missing, truncated or altered file, or a malformed
            ``checksums.json``.
    """
    run_dir = Path(run_dir)
    path = run_dir / CHECKSUMS
    if not path.is_file():
        warnings.warn(
            f"{run_dir} has no {CHECKSUMS} (training did not finish, or an older xmodal wrote "
            "it): its files are not verified",
            stacklevel=2,
        )
        return False
    raw = read_json_file(path)
    if not isinstance(raw, dict) or raw.get("format") != _RUN_FORMAT:
        raise BadInputError(path, f"not an xmodal run manifest (expected {_RUN_FORMAT})")
    try:
        check_files(run_dir, raw["files"], BadInputError, checksums)
    except (KeyError, TypeError, AttributeError) as e:
        raise BadInputError(path, f"malformed run manifest ({e!r})") from e
    return True


def load_run_query_bank(run_dir: str | Path) -> QueryBank | None:
    """The run's query bank, or ``None`` when it was trained without one.

    Raises:
        BadInputError: the config asks for query-bank normalisation but the file is missing,
            or the file is unreadable.
    """
    path = Path(run_dir) / QUERY_BANK
    if path.is_file():
        return load_query_bank(path)
    if read_run_config(run_dir).train.get("query_bank_beta"):
        raise BadInputError(path, "the run was trained with query_bank_beta > 0 but has no bank")
    return None


def _load_state(path: Path, device: str | torch.device) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with every failure an error naming the file."""
    if path.stat().st_size == 0:
        raise BadInputError(path, "checkpoint is empty (0 bytes)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated, random bytes, a pickle of anything but tensors
        raise BadInputError(
            path, f"not a readable checkpoint ({e.__class__.__name__}: {str(e)[:200]})"
        ) from e
    if not isinstance(state, dict):
        raise BadInputError(path, f"checkpoint holds a {type(state).__name__}, not a state dict")
    return state


def load_method(
    run_dir: str | Path, device: str | torch.device = "cpu", verify: bool = True
) -> tuple[Method, RunConfig]:
    """Rebuild the run's method and load its selected checkpoint (after :func:`verify_run`).

    Raises:
        FileNotFoundError: not a run, or no checkpoint.
        BadInputError: a corrupt, truncated or altered file, named.
    """
    config = read_run_config(run_dir)
    model_path = Path(run_dir) / MODEL
    if not model_path.is_file():
        raise FileNotFoundError(
            f"{run_dir} has no checkpoint ({MODEL}): did training finish an epoch?"
        )
    if verify:
        verify_run(run_dir)
    try:
        method = build_method(
            config.method, config.image_dim, config.text_dim, **config.method_options
        )
    except (TypeError, ValueError, KeyError) as e:
        raise BadInputError(Path(run_dir) / CONFIG, f"cannot build the run's method ({e})") from e
    state = _load_state(model_path, device)
    try:
        method.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        raise BadInputError(
            model_path, f"checkpoint does not fit the method in {CONFIG} ({str(e)[:300]})"
        ) from e
    return method.to(device).eval(), config


class RunWriter:
    """Writes a run directory while training goes on (pass :meth:`on_epoch` to the trainer)."""

    def __init__(self, run_dir: str | Path, config: RunConfig) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / CHECKSUMS).unlink(missing_ok=True)  # a new run: the old manifest is void
        self.config = config
        write_json_atomic(self.dir / CONFIG, asdict(config))
        (self.dir / HISTORY).write_text("", encoding="utf-8")

    def write_split(self, split: dict[str, list[str]]) -> None:
        """Store the ids of each split."""
        write_json_atomic(self.dir / SPLIT, split)

    def save_model(self, method: Method) -> None:
        """Write the method's state dict atomically."""
        atomic_write(self.dir / MODEL, lambda p: torch.save(method.state_dict(), p))

    def save_query_bank(self, bank: QueryBank) -> None:
        """Write the query bank the run's scores are normalised with (before :meth:`finish`)."""
        bank.save(self.dir / QUERY_BANK)

    def on_epoch(self, record: dict[str, Any], method: Method) -> None:
        """Append the epoch to the history; rewrite the checkpoint when it was selected."""
        with open(self.dir / HISTORY, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if record.get("selected") or record.get("stage") == "fit":
            self.save_model(method)

    def finish(self, method: Method, metrics: dict[str, Any]) -> None:
        """Write the final (selected) model, the metrics and the training plot."""
        self.save_model(method)
        self.write_metrics(metrics)
        history = [
            json.loads(line) for line in (self.dir / HISTORY).read_text().splitlines() if line
        ]
        if any("loss" in h for h in history):
            plot_history(history, self.dir / PLOT)
        write_checksums(self.dir)  # last: a run with a manifest is a finished run

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """Merge ``metrics`` into ``metrics.json``."""
        write_metrics(self.dir, metrics)


def write_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> None:
    """Merge ``metrics`` into the run's ``metrics.json`` (atomically)."""
    path = Path(run_dir) / METRICS
    current = read_json_file(path) if path.is_file() else {}
    if not isinstance(current, dict):
        raise BadInputError(path, "metrics file is not a JSON object")
    current.update(metrics)
    write_json_atomic(path, current)


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """Training loss and validation rsum per epoch, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = [h["epoch"] for h in history if "loss" in h]
    ax.plot(
        epochs, [h["loss"] for h in history if "loss" in h], label="train loss", color="tab:blue"
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    val = [(h["epoch"], h["val_rsum"]) for h in history if "val_rsum" in h]
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val, strict=True), label="val rsum", color="tab:orange")
        ax2.set_ylabel("validation rsum")
    ax.set_title("training")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)

"""The run directory: everything needed to reproduce, inspect and reuse a training run.

Layout::

    RUN_DIR/
      config.json     method, its options, trainer options, encoders, data, split rule, versions
      split.json      the ids of train / val / test
      history.jsonl   one line per epoch (losses, validation metrics, seconds), appended as it goes
      model.pt        state dict of the checkpoint selected on validation (rewritten atomically)
      metrics.json    validation metrics of the selected checkpoint (+ test, once evaluated)
      training.png    loss and validation curves
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from xmodal import __version__
from xmodal.io import atomic_write, write_json_atomic
from xmodal.methods import Method, build_method
from xmodal.training.config import TrainConfig

__all__ = ["RunConfig", "RunWriter", "load_method", "read_run_config"]

CONFIG, HISTORY, MODEL, METRICS, SPLIT, PLOT = (
    "config.json",
    "history.jsonl",
    "model.pt",
    "metrics.json",
    "split.json",
    "training.png",
)


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

    def train_config(self) -> TrainConfig:
        """The trainer options as a :class:`TrainConfig`."""
        return TrainConfig(**self.train)


def read_run_config(run_dir: str | Path) -> RunConfig:
    """Read ``config.json`` of a run, with a clear error when the folder is not a run."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not an xmodal run directory (no {CONFIG})")
    return RunConfig(**json.loads(path.read_text(encoding="utf-8")))


def load_method(
    run_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[Method, RunConfig]:
    """Rebuild the run's method and load its selected checkpoint."""
    config = read_run_config(run_dir)
    model_path = Path(run_dir) / MODEL
    if not model_path.is_file():
        raise FileNotFoundError(
            f"{run_dir} has no checkpoint ({MODEL}): did training finish an epoch?"
        )
    method = build_method(config.method, config.image_dim, config.text_dim, **config.method_options)
    state = torch.load(model_path, map_location=device, weights_only=True)
    method.load_state_dict(state)
    return method.to(device).eval(), config


class RunWriter:
    """Writes a run directory while training goes on (pass :meth:`on_epoch` to the trainer)."""

    def __init__(self, run_dir: str | Path, config: RunConfig) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        write_json_atomic(self.dir / CONFIG, asdict(config))
        (self.dir / HISTORY).write_text("", encoding="utf-8")

    def write_split(self, split: dict[str, list[str]]) -> None:
        """Store the ids of each split."""
        write_json_atomic(self.dir / SPLIT, split)

    def save_model(self, method: Method) -> None:
        """Write the method's state dict atomically."""
        atomic_write(self.dir / MODEL, lambda p: torch.save(method.state_dict(), p))

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

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """Merge ``metrics`` into ``metrics.json``."""
        write_metrics(self.dir, metrics)


def write_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> None:
    """Merge ``metrics`` into the run's ``metrics.json`` (atomically)."""
    path = Path(run_dir) / METRICS
    current = json.loads(path.read_text()) if path.is_file() else {}
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

"""The ``xmodal`` command line: parses arguments and dispatches to :mod:`xmodal.pipeline`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from xmodal.errors import XmodalError

app = typer.Typer(
    name="xmodal",
    help="Cross-modal image–text retrieval: train, evaluate, search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


def _parse_options(pairs: list[str] | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--option")
        try:
            options[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = raw
    return options


def _fail(error: Exception) -> None:
    err.print(f"[bold red]error:[/] {error}", soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


def _metrics_table(rows: dict[str, dict[str, float]], title: str) -> Table:
    keys = [
        k
        for k in (
            "i2t_r1",
            "i2t_r5",
            "i2t_r10",
            "t2i_r1",
            "t2i_r5",
            "t2i_r10",
            "rsum",
            "map_i2t",
            "map_t2i",
            "map_i2i",
            "map_t2t",
        )
        if any(k in r for r in rows.values())
    ]
    table = Table(title=title)
    table.add_column("")
    for k in keys:
        table.add_column(k, justify="right")
    for name, r in rows.items():
        table.add_row(
            name,
            *(
                f"{r[k]:.3f}" if k.startswith("map") else f"{r[k]:.1f}" if k in r else "–"
                for k in keys
            ),
        )
    return table


@app.command()
def train(
    data: Annotated[
        Path, typer.Option(help="Dataset folder or file (jsonl, coco, karpathy, folder, mat/h5).")
    ],
    out: Annotated[Path, typer.Option(help="Run directory to write.")],
    method: Annotated[
        str, typer.Option(help="Training objective, e.g. infonce, vse, cca, cusa(infonce).")
    ] = "infonce",
    image_encoder: Annotated[
        str, typer.Option(help="Registered image encoder.")
    ] = "efficientnet-lite0",
    text_encoder: Annotated[str, typer.Option(help="Registered text encoder.")] = "minilm",
    epochs: Annotated[int, typer.Option(min=0)] = 30,
    seed: Annotated[int, typer.Option()] = 0,
    batch_size: Annotated[int, typer.Option(min=2)] = 128,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    split: Annotated[
        str, typer.Option(help="sorted:A,B,C | random:A,B,C | karpathy | file:PATH | auto")
    ] = "auto",
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Method option KEY=VALUE (repeatable)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    on_bad: Annotated[
        str, typer.Option(help="error: stop at bad input; skip: skip and report it.")
    ] = "error",
    cache_dir: Annotated[
        Path | None, typer.Option(help="Feature cache (default $XMODAL_CACHE or ~/.cache/xmodal).")
    ] = None,
) -> None:
    """Train a method on a dataset; the checkpoint is chosen on the validation split."""
    from xmodal import pipeline

    try:
        metrics = pipeline.train(
            data, out, method,
            image_encoder=image_encoder, text_encoder=text_encoder, split=split,
            method_options=_parse_options(option),
            train_options={"epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr, "device": device},
            cache_dir=cache_dir, on_bad=on_bad,
        )  # fmt: skip
    except (XmodalError, ValueError, FileNotFoundError) as e:
        _fail(e)
    console.print(
        _metrics_table(
            {"validation": metrics["val"]}, f"{method} — selected epoch {metrics['best_epoch']}"
        )
    )
    console.print(f"run written to [bold]{out}[/]")


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `xmodal train`.")],
    data: Annotated[Path | None, typer.Option(help="Dataset (default: the run's).")] = None,
    split: Annotated[str, typer.Option(help="test, val, train or all.")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    cache_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Recall@K, rsum and (with labels) mAP of a trained run."""
    from xmodal import pipeline

    try:
        metrics = pipeline.evaluate(run_dir, data, split, cache_dir, progress=not as_json)
    except (XmodalError, ValueError, FileNotFoundError) as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
    else:
        console.print(_metrics_table({split: metrics}, str(run_dir)))


@app.command()
def search(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    query: Annotated[str, typer.Argument(help="Text to search images with.")],
    data: Annotated[
        Path | None, typer.Option(help="Images to search (default: the run's data).")
    ] = None,
    k: Annotated[int, typer.Option(min=1, max=1000)] = 5,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    cache_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """The k images that best match a sentence."""
    from xmodal import pipeline

    try:
        hits = pipeline.search_text(run_dir, query, data, k, cache_dir)
    except (XmodalError, ValueError, FileNotFoundError) as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps([h.__dict__ for h in hits], indent=2))
        return
    table = Table(title=f"“{query}”")
    for col in ("rank", "score", "id", "caption"):
        table.add_column(col)
    for h in hits:
        table.add_row(str(h.rank), f"{h.score:.3f}", h.id, h.captions[0] if h.captions else "")
    console.print(table)


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option(help="Where the demo writes its runs and contact sheet.")
    ] = Path("runs/demo"),
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    device: Annotated[str, typer.Option()] = "auto",
) -> None:
    """Train and evaluate on the shipped OpenMoji set, then show three searches."""
    from xmodal.demo import run_demo

    try:
        run_demo(out, epochs=epochs, device=device, console=console)
    except (XmodalError, ValueError, FileNotFoundError) as e:
        _fail(e)


@app.command("list")
def list_registered() -> None:
    """Registered methods and encoders."""
    from xmodal.encoders import list_encoders
    from xmodal.methods import list_methods

    console.print("[bold]methods:[/] " + ", ".join(list_methods()))
    for modality, names in list_encoders().items():
        console.print(f"[bold]{modality} encoders:[/] " + ", ".join(names))


if __name__ == "__main__":  # pragma: no cover
    app()

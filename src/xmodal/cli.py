"""The ``xmodal`` command line: parses arguments and dispatches to :mod:`xmodal.pipeline`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup
from typer.exceptions import TyperException

from xmodal import __version__
from xmodal.errors import require_extra, user_message

# The choices of xmodal.datasets.OnBad and xmodal.index.OnExists, spelled here so that parsing
# imports neither package (mypy checks that they stay the same where they are passed on).
OnBad = Literal["error", "skip"]
OnExists = Literal["error", "skip", "replace"]

#: Set to 1 to see the traceback of an unexpected error (as ``xmodal --debug ...`` does).
DEBUG_ENV = "XMODAL_DEBUG"


class _Commands(TyperGroup):
    """The one error handler of every command.

    An error the user can act on (:func:`xmodal.errors.user_message`: bad input, a missing file or
    optional extra, xmodal's own errors) prints one line and exits with code 2; an unexpected one
    prints one line and exits with 1, or, with ``--debug`` or ``XMODAL_DEBUG=1``, keeps its
    traceback.
    """

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:  # remember the words of the command, for its messages
            ctx.meta.setdefault("xmodal.command", ["xmodal"]).append(command.name)
        return name, command, rest

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):  # usage errors, --help, exits
            raise
        except Exception as e:
            if ctx.meta.get("xmodal.debug") or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                raise
            message = user_message(e, " ".join(ctx.meta.get("xmodal.command", ["xmodal"])))
            if message is not None:
                _fail(message)
            err.print(
                f"[bold red]unexpected error:[/] {escape(f'{type(e).__name__}: {e}')} "
                f"(--debug or {DEBUG_ENV}=1 shows the traceback)",
                soft_wrap=True,
                highlight=False,
            )
            raise typer.Exit(code=1) from e


app = typer.Typer(
    name="xmodal",
    help="Cross-modal image–text retrieval: train, evaluate, search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_Commands,
)
console = Console()
err = Console(stderr=True)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"xmodal {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help=f"Tracebacks for unexpected errors (or {DEBUG_ENV}=1).")
    ] = False,
) -> None:
    """Cross-modal image–text retrieval: train, evaluate, search."""
    ctx.meta["xmodal.debug"] = debug


def _parse_options(pairs: list[str] | None, flag: str = "--option") -> dict[str, str]:
    """``KEY=VALUE`` pairs as strings; the config's field types coerce them
    (:func:`xmodal.options.build_config`)."""
    options: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=flag)
        options[key.strip().replace("-", "_")] = raw
    return options


class _ErrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        err.print(
            f"[yellow]warning:[/] {escape(record.getMessage())}", soft_wrap=True, highlight=False
        )


@contextlib.contextmanager
def _report_skips() -> Iterator[None]:
    """Print what ``--on-bad skip`` dropped (count by reason, first few file:line) to stderr."""
    logger, handler = logging.getLogger("xmodal.datasets"), _ErrHandler(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _fail(error: Exception | str) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True, highlight=False)
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
            "rsum_cosine",
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
                "–" if k not in r else f"{r[k]:.3f}" if k.startswith("map") else f"{r[k]:.1f}"
                for k in keys
            ),
        )
    return table


@app.command()
@_report_skips()
def train(
    data: Annotated[
        Path, typer.Option(help="Dataset folder or file (jsonl, coco, karpathy, folder, mat/h5).")
    ],
    out: Annotated[Path, typer.Option(help="Run directory to write.")],
    method: Annotated[
        str | None,
        typer.Option(
            help="Training objective, e.g. infonce, vse, cca, cusa(infonce) "
            "[default: the preset's, else infonce]."
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="Start from a named preset (xmodal list presets) or a preset JSON file; "
            "explicit options override it."
        ),
    ] = None,
    target: Annotated[
        Path | None,
        typer.Option(
            help="aeir: dataset of the target domain; its pairing is ignored (its images and "
            "captions are two unpaired pools)."
        ),
    ] = None,
    image_encoder: Annotated[
        str | None,
        typer.Option(
            help="Registered image encoder [default: efficientnet-lite0, or what image_tower reads]."
        ),
    ] = None,
    text_encoder: Annotated[
        str | None,
        typer.Option(help="Registered text encoder [default: minilm, or what text_tower reads]."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=0, help="[default: 30]")] = None,
    seed: Annotated[int | None, typer.Option(help="[default: 0]")] = None,
    batch_size: Annotated[int | None, typer.Option(min=2, help="[default: 128]")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="[default: 0.001]")] = None,
    split: Annotated[
        str, typer.Option(help="sorted:A,B,C | random:A,B,C | karpathy | file:PATH | auto")
    ] = "auto",
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Method option KEY=VALUE (repeatable)."),
    ] = None,
    train_option: Annotated[
        list[str] | None,
        typer.Option(
            "--train-option",
            "-t",
            help="Trainer option KEY=VALUE (repeatable): patience, weight_decay, warmup_fraction, "
            "select_metric, grad_clip, epochs, lr, batch_size, seed, …",
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda [default: auto].")] = None,
    on_bad: Annotated[
        OnBad, typer.Option(help="error: stop at bad input; skip: skip and report it.")
    ] = "error",
    cache_dir: Annotated[
        Path | None, typer.Option(help="Feature cache (default $XMODAL_CACHE or ~/.cache/xmodal).")
    ] = None,
    ddp: Annotated[
        bool,
        typer.Option(help="DistributedDataParallel under torchrun; --batch-size is per process."),
    ] = False,
) -> None:
    """Train a method on a dataset; the checkpoint is chosen on the validation split.

    Option values are typed by the method's and the trainer's config fields (e.g. -o
    hidden=1024,512, -t grad_clip=none); precedence: typed flags over -t/-o over the preset.
    """
    from xmodal import pipeline

    typed = {"epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr, "device": device}
    train_options = {
        **_parse_options(train_option, "--train-option"),
        **{k: v for k, v in typed.items() if v is not None},
    }
    run_train = pipeline.train_ddp if ddp else pipeline.train
    metrics = run_train(
        data, out, method, preset=preset, target=target,
        image_encoder=image_encoder, text_encoder=text_encoder, split=split,
        method_options=_parse_options(option), train_options=train_options,
        cache_dir=cache_dir, on_bad=on_bad,
    )  # fmt: skip
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 reports (and writes) the run
    title = f"{method or preset or 'infonce'} — selected epoch {metrics['best_epoch']}"
    console.print(_metrics_table({"validation": metrics["val"]}, title))
    console.print(f"run written to [bold]{out}[/]")


@app.command()
@_report_skips()
def encode(
    data: Annotated[Path, typer.Option(help="Dataset folder or file.")],
    image_encoder: Annotated[
        str, typer.Option(help="Registered image encoder.")
    ] = "efficientnet-lite0",
    text_encoder: Annotated[str, typer.Option(help="Registered text encoder.")] = "minilm",
    ray: Annotated[bool, typer.Option("--ray", help="Encode on a Ray actor pool.")] = False,
    ray_address: Annotated[
        str, typer.Option(help="With --ray: cluster address (auto, ray://host:10001) or local.")
    ] = "local",
    shard_size: Annotated[int, typer.Option(min=1, help="Rows per Ray shard.")] = 1024,
    actors: Annotated[int, typer.Option(min=1, help="Encoder actors (one GPU each if any).")] = 2,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (without --ray).")] = "auto",
    on_bad: Annotated[OnBad, typer.Option(help="error or skip bad input.")] = "error",
    cache_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Fill the feature cache with a dataset's image and caption features (resumable)."""
    from xmodal.distributed.jobs import encode_collection

    if ray:
        require_extra("ray", needed_by="xmodal encode --ray")

    done = encode_collection(
        data, image_encoder=image_encoder, text_encoder=text_encoder, cache_dir=cache_dir,
        ray=ray_address if ray else None, shard_size=shard_size, actors=actors,
        batch_size=batch_size,
        device=None if device == "auto" else device, on_bad=on_bad,
    )  # fmt: skip
    for modality, result in done.items():
        console.print(f"{modality}: {result}", highlight=False, soft_wrap=True)


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

    metrics = pipeline.evaluate(run_dir, data, split, cache_dir, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
    else:
        console.print(_metrics_table({split: metrics}, str(run_dir)))


# --- index and search (xmodal.index, xmodal.search) ---------------------------------------------
index_app = typer.Typer(
    help="Build, grow and shrink persistent search indexes.", no_args_is_help=True, cls=_Commands
)
app.add_typer(index_app, name="index")


def _index_summary(manifest: Any, index_dir: Path) -> None:
    img, txt = manifest.collections["image"], manifest.collections["text"]
    console.print(
        f"[bold]{index_dir}[/] version {manifest.version}: {img.count} items "
        f"(float {img.float_kind}, binary {img.binary_kind}), {txt.count} captions "
        f"(float {txt.float_kind}, binary {txt.binary_kind}); {manifest.dim}-d embeddings, "
        f"{manifest.bits}-bit codes from {manifest.codes.get('source')}, "
        f"model {manifest.model.get('kind')}",
        highlight=False,
        soft_wrap=True,
    )


@index_app.command("build")
@_report_skips()
def index_build(
    data: Annotated[Path, typer.Option(help="Dataset or plain folder of images to index.")],
    out: Annotated[Path, typer.Option(help="Index folder to write.")],
    run_dir: Annotated[
        Path | None, typer.Argument(help="A trained run (or use --encoder for zero-shot).")
    ] = None,
    encoder: Annotated[
        str | None, typer.Option(help="Zero-shot dual encoder, e.g. open_clip:ViT-B-32.")
    ] = None,
    weights: Annotated[Path | None, typer.Option(help="Local weights file of --encoder.")] = None,
    bits: Annotated[
        int | None, typer.Option(help="Code length (16/32/64/128); default: head's, else 64.")
    ] = None,
    codes: Annotated[str, typer.Option(help="auto, head, itq or random.")] = "auto",
    kind: Annotated[
        str, typer.Option(help="auto or an index kind name (`xmodal list` shows them).")
    ] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    on_bad: Annotated[OnBad, typer.Option(help="error or skip bad input.")] = "error",
    cache_dir: Annotated[Path | None, typer.Option()] = None,
    ray: Annotated[
        bool, typer.Option("--ray", help="Encode (and with --shards, index) on Ray.")
    ] = False,
    ray_address: Annotated[
        str, typer.Option(help="With --ray: cluster address (auto, ray://host:10001) or local.")
    ] = "local",
    shards: Annotated[
        int, typer.Option(min=0, help="With --ray: also build this many float index shards.")
    ] = 0,
) -> None:
    """Index a dataset (or a folder of photos) with a trained run or a zero-shot dual encoder."""
    from xmodal.index import build_index

    if ray:
        require_extra("ray", needed_by="xmodal index build --ray")

    if ray:
        from xmodal.distributed.jobs import build_index_ray

        manifest = build_index_ray(
            run_dir, data, out, ray=ray_address, shards=shards, cache_dir=cache_dir,
            on_bad=on_bad, encoder=encoder, weights=weights, bits=bits, codes=codes, kind=kind,
            overwrite=overwrite, device=device,
        )  # fmt: skip
    else:
        manifest = build_index(
            run_dir, data, out, encoder=encoder, weights=weights, bits=bits, codes=codes,
            kind=kind, overwrite=overwrite, cache_dir=cache_dir, device=device, on_bad=on_bad,
        )  # fmt: skip
    _index_summary(manifest, out)


@index_app.command("add")
@_report_skips()
def index_add(
    index_dir: Annotated[Path, typer.Argument(help="An index folder.")],
    data: Annotated[Path, typer.Option(help="Dataset or folder of images to add.")],
    on_exists: Annotated[
        OnExists, typer.Option(help="Ids already indexed: error, skip or replace.")
    ] = "error",
    device: Annotated[str, typer.Option()] = "auto",
    on_bad: Annotated[OnBad, typer.Option(help="error or skip bad input.")] = "error",
    cache_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Encode new items with the index's own model and add them (a new, atomic version)."""
    from xmodal.index import add_to_index

    manifest = add_to_index(
        index_dir, data, on_exists=on_exists, cache_dir=cache_dir, device=device, on_bad=on_bad,
    )  # fmt: skip
    _index_summary(manifest, index_dir)


@index_app.command("remove")
def index_remove(
    index_dir: Annotated[Path, typer.Argument(help="An index folder.")],
    ids: Annotated[list[str], typer.Argument(help="Item ids to remove.")],
    missing_ok: Annotated[bool, typer.Option(help="Ignore ids that are not indexed.")] = False,
) -> None:
    """Remove items (their image and caption rows) by id."""
    from xmodal.index import remove_from_index

    manifest = remove_from_index(index_dir, ids, missing_ok=missing_ok)
    _index_summary(manifest, index_dir)


@index_app.command("info")
def index_info(
    index_dir: Annotated[Path, typer.Argument(help="An index folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """What an index holds (and whether its files are intact)."""
    from xmodal.index import Snapshot

    with Snapshot.open(index_dir) as snap:
        manifest = snap.manifest
    if as_json:
        typer.echo(manifest.to_json())
    else:
        _index_summary(manifest, index_dir)


def _search_run(
    run_dir: Path, query: str | None, image: Path | None, data: Path | None, k: int,
    cache_dir: Path | None,
) -> list[Any]:  # fmt: skip
    from xmodal import pipeline

    if image is not None or query is None:
        raise ValueError(
            "a run directory is searched with a text query; image queries need an index "
            "(xmodal index build RUN_DIR --data DIR --out INDEX_DIR)"
        )
    return pipeline.search_text(run_dir, query, data, k, cache_dir)


@app.command()
def search(
    target: Annotated[Path, typer.Argument(help="An index folder, or a run directory.")],
    query: Annotated[str | None, typer.Argument(help="Text to search with.")] = None,
    image: Annotated[Path | None, typer.Option(help="Search with this image instead.")] = None,
    k: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    to: Annotated[str | None, typer.Option(help="image or text rows (default: image).")] = None,
    mode: Annotated[str, typer.Option(help="float, hamming or two-stage.")] = "float",
    candidates: Annotated[int, typer.Option(min=1, help="Two-stage Hamming candidates.")] = 1000,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="Only items with this label (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write an HTML page.")] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Run directories only: images to search (default: the run's data)."),
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """The k best matches of a sentence (or, with --image, of a picture) in an index or a run."""
    from xmodal.index import is_index_dir

    title = f"“{query}”" if query is not None else f"image {image}"
    if (query is None) == (image is None):
        raise ValueError("give a text query or --image PATH (one of the two)")
    if is_index_dir(target):
        from xmodal.search import Searcher

        direction = {
            ("text", "image"): "text_to_image", ("text", "text"): "text_to_text",
            ("image", "image"): "image_to_image", ("image", "text"): "image_to_text",
        }.get(("text" if query is not None else "image", to or "image"))  # fmt: skip
        if direction is None:
            raise ValueError(f"--to must be image or text, got {to!r}")
        with Searcher(target) as searcher:
            results: list[Any] = getattr(searcher, direction)(
                query if query is not None else image,
                k,
                labels=label,
                mode=mode,
                candidates=candidates,
            )
    elif not (target / "config.json").is_file():
        raise ValueError(
            f"{target} is neither an index (no CURRENT file) nor a run directory (no config.json)"
        )
    else:
        if to not in (None, "image") or label or mode != "float":
            raise ValueError("--to, --label and --mode need an index, not a run directory")
        results = _search_run(target, query, image, data, k, cache_dir)
    rows = [r.to_dict() for r in results]
    if html_out is not None:
        from xmodal.search import write_results_html

        write_results_html({title: results}, html_out, title=f"xmodal search: {target}")
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(title=title)
    for col in ("rank", "score", "id", "caption"):
        table.add_column(col)
    for r in rows:
        text = r.get("caption") or (r["captions"][0] if r["captions"] else "")
        table.add_row(str(r["rank"]), f"{r['score']:.3f}", r["id"], text)
    console.print(table)
    if html_out is not None:
        console.print(f"results page written to [bold]{html_out}[/]")


def _read_token(token_env: str, token_file: Path | None) -> str | None:
    """The write token: the file's first line, else the environment variable; empty = none."""
    if token_file is not None:
        try:
            lines = token_file.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ValueError(f"cannot read --token-file {token_file}: {e.strerror}") from e
        token = lines[0].strip() if lines else ""
    else:
        token = os.environ.get(token_env, "").strip()
    return token or None


def _serve(
    index_dir: Path,
    host: str,
    port: int,
    token: str | None,
    device: str | None,
    max_threads: int | None = None,
    torch_threads: int | None = None,
) -> None:
    from xmodal import serve as serving

    where = f"http://{host}:{port}/"
    mode = "writes need the bearer token" if token else "read-only (no write token set)"
    extra: dict[str, Any] = {}
    if max_threads is not None:
        extra["limits"] = serving.Limits(max_threads=max_threads)
    if torch_threads is not None:
        extra["torch_threads"] = torch_threads

    def ready() -> None:  # only once the index has been opened and checked
        console.print(f"serving [bold]{index_dir}[/] at [bold]{where}[/] — {mode}", highlight=False)

    serving.run(
        index_dir, host=host, port=port, token=token, device=device, on_ready=ready, **extra
    )


@app.command()
def serve(
    index_dir: Annotated[Path, typer.Argument(help="An index folder (xmodal index build).")],
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    token_env: Annotated[
        str, typer.Option(help="Environment variable holding the write token (none: read-only).")
    ] = "XMODAL_TOKEN",
    token_file: Annotated[
        Path | None, typer.Option(help="File whose first line is the write token.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    max_threads: Annotated[
        int | None,
        typer.Option(min=1, help="Requests handled at once [default: min(32, CPUs + 4)]."),
    ] = None,
    torch_threads: Annotated[
        int | None,
        typer.Option(min=1, help="Torch threads per request [default: 1, or $OMP_NUM_THREADS]."),
    ] = None,
) -> None:
    """Serve an index over HTTP: JSON API, web page at /, metrics at /metrics, docs at /docs."""
    from xmodal.index import is_index_dir

    require_extra("fastapi", "uvicorn", needed_by="xmodal serve")

    if not is_index_dir(index_dir):
        raise ValueError(f"{index_dir} is not an xmodal index (no CURRENT file)")
    token = _read_token(token_env, token_file)
    _serve(index_dir, host, port, token, device, max_threads, torch_threads)


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option(help="Where the demo writes its runs and contact sheet.")
    ] = Path("runs/demo"),
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    device: Annotated[str, typer.Option()] = "auto",
    serve_index: Annotated[
        bool, typer.Option("--serve", help="Then index the demo set and serve it over HTTP.")
    ] = False,
    host: Annotated[str, typer.Option(help="With --serve: address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="With --serve: port.")] = 8000,
) -> None:
    """Train and evaluate on the shipped OpenMoji set, then show three searches."""
    from xmodal.demo import run_demo

    if serve_index:  # before minutes of training, not after
        require_extra("fastapi", "uvicorn", needed_by="xmodal demo --serve")
    shown = run_demo(out, epochs=epochs, device=device, console=console)["winner"]
    if serve_index:
        from xmodal.demo import demo_data_path
        from xmodal.index import build_index

        console.print(f"indexing the demo set with the [bold]{shown}[/] run …")
        build_index(out / shown, demo_data_path(), out / "index", overwrite=True, device=device)
        _serve(out / "index", host, port, _read_token("XMODAL_TOKEN", None), device)


@app.command("list")
def list_registered(
    what: Annotated[
        str, typer.Argument(help="methods, encoders, kinds (index kinds), presets or all.")
    ] = "all",
) -> None:
    """Registered methods, encoders (dimension, runtime, weights' origin), index kinds and
    presets."""
    if what not in ("all", "methods", "encoders", "kinds", "presets"):
        _fail(f"xmodal list takes methods, encoders, kinds, presets or all; got {what!r}")
    if what in ("all", "methods"):
        from xmodal.methods import list_methods

        console.print("[bold]methods:[/] " + ", ".join(list_methods()))
    if what in ("all", "encoders"):
        from rich.table import Table

        from xmodal.encoders import describe_encoders

        for modality, rows in describe_encoders().items():
            table = Table(title=f"{modality} encoders", title_justify="left")
            table.add_column("name", no_wrap=True)
            for column in ("dim", "runtime", "weights"):
                table.add_column(column)
            for name, info in rows:
                table.add_row(name, str(info.dim), info.runtime, info.weights)
            if modality == "image":
                table.caption = "A+B: the parts' unit-length features side by side"
            console.print(table)
    if what in ("all", "kinds"):
        from xmodal.index.kinds import kind_names

        for family in ("float", "binary"):
            console.print(f"[bold]{family} index kinds:[/] auto, " + ", ".join(kind_names(family)))
    if what in ("all", "presets"):
        from xmodal.training.presets import get_preset, list_presets

        console.print("[bold]presets:[/]")
        for p in [get_preset(name) for name in list_presets()]:
            uses = ", ".join(e for e in (p.method, p.image_encoder, p.text_encoder) if e)
            console.print(
                f"  [bold]{p.name}[/] ({escape(uses)}): {escape(p.description)}",
                highlight=False,
                soft_wrap=True,
            )


if __name__ == "__main__":  # pragma: no cover
    app()

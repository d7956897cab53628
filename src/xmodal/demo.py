"""``xmodal demo``: the whole pipeline on the shipped OpenMoji set in a few minutes on a CPU.

Encodes the 2,464 emoji and their captions, trains ``infonce`` next to the closed-form ``cca``
baseline on a seeded 80/10/10 split, picks the one with the better validation mAP (mean of i2t
and t2i, group-or-subgroup relevance), evaluates both on the held-out test split, runs three
text→image searches with the winner and writes an HTML contact sheet of their results.
"""

from __future__ import annotations

import base64
import html
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from xmodal.datasets import load_dataset
from xmodal.io import atomic_write
from xmodal.pipeline import evaluate, run_searcher, train
from xmodal.search import Result

__all__ = [
    "DEMO_METHODS",
    "DEMO_QUERIES",
    "demo_data_path",
    "run_demo",
    "validation_winner",
    "write_contact_sheet",
]

#: Methods the demo trains; the one with the best validation mAP is shown and searched.
DEMO_METHODS = ("cca", "infonce")
DEMO_QUERIES = ("a cat with a smiling face", "fast red vehicle", "fresh fruit to eat")
ATTRIBUTION = (
    "Emoji: OpenMoji (openmoji.org), the open-source emoji and icon project, CC BY-SA 4.0."
)


RECALL_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
MAP_KEYS = ("map_i2t", "map_t2i", "map_i2i", "map_t2t")


def _table(title: str, metrics: dict[str, dict[str, float]], keys: tuple[str, ...]) -> Table:
    table = Table(title=title)
    table.add_column("method")
    for k in keys:
        table.add_column(k.replace("map_", ""), justify="right")
    for method, m in metrics.items():
        table.add_row(
            method, *(f"{m[k]:.3f}" if k.startswith("map") else f"{m[k]:.1f}" for k in keys)
        )
    return table


def demo_data_path() -> Path:
    """Folder of the OpenMoji demo set shipped inside the package."""
    return Path(str(resources.files("xmodal") / "demo_data" / "openmoji"))


def write_contact_sheet(results: dict[str, list[Result]], path: Path) -> Path:
    """A self-contained HTML page (images inlined) with one row of results per query."""
    rows = []
    for query, hits in results.items():
        cells = []
        for h in hits:
            src = ""
            if h.image and Path(h.image).is_file():
                data = base64.b64encode(Path(h.image).read_bytes()).decode()
                src = f"data:image/png;base64,{data}"
            caption = html.escape(h.captions[0] if h.captions else h.id)
            cells.append(
                f'<figure><img src="{src}" alt="{caption}" width="96" height="96">'
                f"<figcaption>{h.rank}. {caption}<br><small>{h.score:.3f}</small></figcaption></figure>"
            )
        rows.append(
            f"<section><h2>“{html.escape(query)}”</h2><div class=row>{''.join(cells)}</div></section>"
        )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xmodal demo: text → image</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}}
.row{{display:flex;flex-wrap:wrap;gap:1rem}}figure{{margin:0;width:8rem;text-align:center}}
img{{image-rendering:auto;border:1px solid #ddd;border-radius:.5rem;background:#fff}}
figcaption{{font-size:.85rem}}footer{{margin-top:2rem;color:#555;font-size:.85rem}}</style></head>
<body><h1>xmodal demo — text → image search</h1>{"".join(rows)}
<footer>{html.escape(ATTRIBUTION)}</footer></body></html>
"""
    return atomic_write(path, lambda p: p.write_text(page, encoding="utf-8"))


def validation_winner(val: dict[str, dict[str, float]]) -> str:
    """The method with the best mean of validation i2t and t2i mAP (the first one on a tie)."""
    return max(val, key=lambda m: (val[m]["map_i2t"] + val[m]["map_t2i"]) / 2)


def run_demo(
    out: str | Path, epochs: int = 30, device: str = "auto", console: Console | None = None
) -> dict:
    """Run the demo; returns ``{"metrics": {method: test metrics}, "val": {method: validation
    metrics}, "winner": method picked on validation, "searches": {query: the winner's hits}}``."""
    console = console or Console()
    out = Path(out)
    data = demo_data_path()
    dataset = load_dataset(data)
    console.print(f"[bold]OpenMoji[/]: {len(dataset)} emoji, {len(dataset.captions()[0])} captions")
    train_options = {"epochs": epochs, "device": device, "seed": 0}
    metrics, val = {}, {}
    for method in DEMO_METHODS:
        console.print(f"training [bold]{method}[/] …")
        train(
            data,
            out / method,
            method,
            dataset=dataset,
            train_options=train_options,
            split="random:0.8,0.1,0.1",
        )
        val[method] = evaluate(out / method, data, "val", progress=False)
        metrics[method] = evaluate(out / method, data, "test", progress=False)
    winner = validation_winner(val)
    console.print(
        "validation mAP (mean of i2t and t2i): "
        + ", ".join(f"{m} {(v['map_i2t'] + v['map_t2i']) / 2:.3f}" for m, v in val.items())
        + f" → showing [bold]{winner}[/]"
    )
    console.print(_table("OpenMoji test split: recall (%)", metrics, RECALL_KEYS))
    console.print(
        _table(
            "OpenMoji test split: mAP@all (relevant: shares a group or subgroup)", metrics, MAP_KEYS
        )
    )
    with run_searcher(out / winner, data) as searcher:  # one index for every query
        searches = {q: searcher.text_to_image(q, k=6) for q in DEMO_QUERIES}
    for q, hits in searches.items():
        console.print(f"[bold]“{q}”[/] → " + ", ".join(h.captions[0] for h in hits))
    sheet = write_contact_sheet(searches, out / "contact_sheet.html")
    console.print(f"contact sheet: [bold]{sheet}[/]")
    console.print(ATTRIBUTION)
    return {"metrics": metrics, "val": val, "winner": winner, "searches": searches}

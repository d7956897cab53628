"""A self-contained HTML page of search results (images inlined as data URIs)."""

from __future__ import annotations

import base64
import html
import mimetypes
from collections.abc import Mapping, Sequence
from pathlib import Path

from xmodal.io import atomic_write
from xmodal.search.results import Result

__all__ = ["write_results_html"]

#: Images larger than this are linked by path instead of inlined.
MAX_INLINE_BYTES = 2 << 20


def _image_src(path: str | None) -> str:
    if not path:
        return ""
    p = Path(path)
    if not p.is_file():
        return ""
    if p.stat().st_size > MAX_INLINE_BYTES:
        return p.resolve().as_uri()
    mime = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(p.read_bytes()).decode()}"


def _figure(r: Result) -> str:
    text = r.caption if r.caption is not None else (r.captions[0] if r.captions else r.id)
    src = _image_src(r.image)
    img = f'<img src="{src}" alt="{html.escape(text)}" loading="lazy">' if src else ""
    dist = f" · d={r.distance}" if r.distance is not None else ""
    return (
        f"<figure>{img}<figcaption><b>{r.rank}.</b> {html.escape(text)}<br>"
        f"<small>{html.escape(r.id)} · {r.score:.3f}{dist}</small></figcaption></figure>"
    )


def write_results_html(
    results: Mapping[str, Sequence[Result]], path: str | Path, title: str = "xmodal search"
) -> Path:
    """Write one section per query (``{query label: results}``) to ``path`` (atomically)."""
    sections = "".join(
        f"<section><h2>{html.escape(query)}</h2><div class=row>{''.join(_figure(r) for r in rs)}"
        "</div></section>"
        for query, rs in results.items()
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:80rem}}
.row{{display:flex;flex-wrap:wrap;gap:1rem}}figure{{margin:0;width:10rem}}
img{{width:10rem;height:10rem;object-fit:contain;border:1px solid #ddd;border-radius:.5rem}}
figcaption{{font-size:.85rem}}</style></head>
<body><h1>{html.escape(title)}</h1>{sections}</body></html>
"""
    return atomic_write(path, lambda p: p.write_text(page, encoding="utf-8"))

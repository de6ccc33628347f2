"""The HTML helpers of the reports (one run's, :mod:`compressor.report_page`, and the merged one,
:mod:`compressor.merge_render`): a self-contained page with an inline stylesheet, escaped tables,
plots embedded as base64 PNG (:class:`Plots`; no external CSS, JS or images), the target profile and
the kept-channels section. Every piece of text from a report goes through :func:`html.escape`.

Plots need matplotlib; without it pages are written without them (and say so).
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from compress_base.fileio import write_atomic

from .report_plots import have_matplotlib, width_rows, widths_figure
from .report_summary import pct
from .run_report import ArchitectureInfo, Target
from .units import format_count

log = logging.getLogger(__name__)

HTML_FILE = "report.html"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #2a6fb0;padding-bottom:.2em}
h2{font-size:1.2em;margin-top:1.8em;color:#2a6fb0}
table{border-collapse:collapse;margin:.6em 0}
th,td{border:1px solid #d0d4da;padding:.25em .6em;vertical-align:top}
th{background:#eef2f7;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafbfc}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.92em}
pre{background:#f5f6f8;padding:.6em;overflow-x:auto}
img{max-width:100%;height:auto;display:block;margin:.6em 0}
.note{color:#5b6470}
.ok{color:#17803d;font-weight:600}
.bad{color:#b42318;font-weight:600}
ul.facts li{margin:.15em 0}
footer{margin-top:3em;font-size:.85em;color:#5b6470}
"""

# --------------------------------------------------------------------------------------------
# HTML helpers
# --------------------------------------------------------------------------------------------


def esc(value) -> str:
    """HTML-escape ``str(value)`` (quotes too, so the result is safe in attributes)."""
    return html.escape(str(value), quote=True)


def table(header: Sequence[str], rows: Iterable[Sequence], numeric_from: int = 1, cls: str = "") -> str:
    """An HTML table; cells are escaped; columns from ``numeric_from`` on are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            attr = ' class="num"' if i >= numeric_from else ""
            cells.append(f"<td{attr}>{esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kv_table(items: Iterable[tuple]) -> str:
    """A two-column key/value table (values escaped)."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return f"<table><tbody>{rows}</tbody></table>"


def page(title: str, body: str, css: str = CSS) -> str:
    """A complete HTML document with the inline stylesheet ``css``; ``body`` is already HTML."""
    from . import __version__

    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n{body}\n"
        f"<footer>Written by compressor {esc(__version__)}.</footer>\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


class Plots:
    """Turns figures into ``<img>`` tags: inline base64 PNG (default) or PNG files in ``plots_dir``.

    With ``plots_dir`` the files are written atomically and referenced as
    ``<plots_dir name>/<name>.png``, i.e. relative to the folder that holds ``plots_dir``
    (where the HTML page belongs).
    """

    def __init__(self, plots_dir=None):
        self.plots_dir = Path(plots_dir) if plots_dir is not None else None
        self.enabled = have_matplotlib()

    def img(self, make, name: str, alt: str) -> str:
        """``<img>`` of the figure ``make()`` returns ("" for None). A plot that fails to draw is
        logged and replaced by a note: a report's figures matter more than its pictures."""
        try:
            fig = make()
            if fig is None:
                return ""
            return self._img(fig, name, alt)
        except Exception as exc:  # noqa: BLE001 - matplotlib can fail in many ways; the tables stand
            log.warning("could not draw the %s plot: %s: %s", name, type(exc).__name__, exc)
            return (f'<p class="note">The {esc(name)} plot could not be drawn '
                    f'({esc(type(exc).__name__)}: {esc(exc)}).</p>')

    def _img(self, fig, name: str, alt: str) -> str:
        if self.plots_dir is None:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
            data = base64.b64encode(buf.getvalue()).decode("ascii")
            src = f"data:image/png;base64,{data}"
        else:
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
            write_atomic(self.plots_dir / f"{safe}.png",
                         lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
            src = f"{self.plots_dir.name}/{safe}.png"
        return f'<img src="{esc(src)}" alt="{esc(alt)}">'

    def missing(self) -> str:
        return '<p class="note">Plots need matplotlib: <code>pip install matplotlib</code>.</p>'



def format_budget(budget: dict | None) -> str:
    """``macs <= 20M, latency_ms <= 0.8 ms`` for the bounds a budget sets; ``none`` without any."""
    parts = []
    for k, v in (budget or {}).items():
        if v is None:
            continue
        parts.append(f"{k} <= {v:g} ms" if k == "latency_ms" else f"{k} <= {format_count(v)}")
    return ", ".join(parts) or "none"


def profile_items(target: Target) -> list[tuple]:
    """Key/value rows describing a target profile, its notes (power mode, clocks, ...) last."""
    items = [(key, getattr(target, key)) for key in ("name", "description", "device", "precision", "batch")
             if getattr(target, key) is not None]
    if target.runtimes:
        items.append(("runtimes", ", ".join(map(str, target.runtimes))))
    if target.input_shape:
        items.append(("profile input shape", "x".join(map(str, target.input_shape))))
    if target.channel_multiple:
        items.append(("channel multiple", target.channel_multiple))
    if target.measure:
        items.append(("measurement", ", ".join(f"{k} {v}" for k, v in target.measure.items())))
    items += [(k.replace("_", " "), v) for k, v in (target.notes or {}).items()]
    if target.source:
        items.append(("profile file", target.source))
    return items


def architecture_section(architecture: ArchitectureInfo, plots: Plots, name: str = "widths", title: str = "") -> str:
    """Kept-channels plot and table, dropped blocks, DAG cell edges (NAS runs)."""
    out = []
    blocks, dropped = architecture.blocks or {}, architecture.dropped_blocks
    if blocks:
        out.append(f"<p>Blocks kept: {sum(1 for v in blocks.values() if v)} of {len(blocks)}; dropped: "
                   f"{esc(', '.join(dropped) or 'none')}.</p>")
    elif dropped:
        out.append(f"<p>Dropped blocks: {esc(', '.join(dropped))}.</p>")
    rows = width_rows(architecture)
    if rows:
        if plots.enabled:
            out.append(plots.img(lambda: widths_figure(architecture, title), name, "kept channels per group"))
        has_orig = any(r["original"] for r in rows)
        header = ["group", "kept channels"] + (["original", "kept %"] if has_orig else []) + ["note"]
        trows = []
        for r in rows:
            row = [r["group"], r["kept"]]
            if has_orig:
                row += [r["original"], pct(r["kept"], r["original"])] if r["original"] else ["-", "-"]
            row.append(f"block {r['dropped_block']} dropped" if r["dropped_block"] else "")
            trows.append(row)
        out.append(table(header, trows))
    if architecture.cell_edges:
        out.append(f"<p>Cell edges:</p><pre>{esc(json.dumps(architecture.cell_edges, indent=1))}</pre>")
    return "".join(out)


__all__ = ["HTML_FILE", "Plots", "architecture_section", "esc", "format_budget", "kv_table", "page", "profile_items",
           "table"]

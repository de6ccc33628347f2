"""``report.html``: one run's report as a single self-contained HTML page.

The page carries the summary table of ``report.md``, the target profile and its notes (power
mode, clocks), how latency was measured, the ONNX parity check, the architecture (kept channels
per group, dropped blocks), layers left fixed, notes and stage timings, plus plots (see
:mod:`compressor.report_plots`) embedded as base64 PNG, so the file stands alone: no external CSS,
JS or images. Every piece of text from the report goes through :func:`html.escape`.

Plots need matplotlib; without it the page is written without them (and says so). The helpers
here (:class:`Plots`, :func:`page`, :func:`table`, :func:`profile_items`,
:func:`architecture_section`) are shared with :mod:`compressor.merge`.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from compress_base.fileio import write_atomic, write_text

from .report_plots import have_matplotlib, latency_figure, width_rows, widths_figure
from .run_report import ArchitectureInfo, RunReport, Target
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


def page(title: str, body: str) -> str:
    """A complete HTML document with the inline stylesheet; ``body`` is already HTML."""
    from . import __version__

    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
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



# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


def _pct(new, old) -> str:
    return f"{100 * new / old:.1f}%" if old else "-"


def summary_rows(report: RunReport) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table, formatted like ``report.md``'s."""
    b, c = report.baseline, report.compressed
    lat_b, lat_c = report.latency.baseline, report.latency.compressed
    pcts = ("p50", "p90", "p99")
    if b is None:
        rows = [["MACs", format_count(c.macs)], ["params", format_count(c.params)],
                ["val accuracy", f"{100 * c.accuracy:.2f}%"]]
        if lat_c:
            rows += [[f"latency {k} (ms)", f"{getattr(lat_c, k):.3f}"] for k in pcts]
            rows.append(["throughput (inf/s)", f"{lat_c.throughput:.1f}"])
        return ["", "model"], rows
    rows = [
        ["MACs", format_count(b.macs), format_count(c.macs), _pct(c.macs, b.macs)],
        ["params", format_count(b.params), format_count(c.params), _pct(c.params, b.params)],
        ["val accuracy", f"{100 * b.accuracy:.2f}%", f"{100 * c.accuracy:.2f}%", ""],
    ]
    if lat_b and lat_c:
        rows += [[f"latency {k} (ms)", f"{getattr(lat_b, k):.3f}", f"{getattr(lat_c, k):.3f}",
                  _pct(getattr(lat_c, k), getattr(lat_b, k))] for k in pcts]
        rows.append(["throughput (inf/s)", f"{lat_b.throughput:.1f}", f"{lat_c.throughput:.1f}", ""])
    return ["", "baseline", "compressed", "ratio"], rows


def format_budget(budget: dict | None) -> str:
    """``macs <= 20M, latency_ms <= 0.8 ms`` for the bounds a budget sets; ``none`` without any."""
    parts = []
    for k, v in (budget or {}).items():
        if v is None:
            continue
        parts.append(f"{k} <= {v:g} ms" if k == "latency_ms" else f"{k} <= {format_count(v)}")
    return ", ".join(parts) or "none"


def _facts(report: RunReport) -> str:
    target = report.target or Target()
    items = [f"Target: <code>{esc(target.name or '?')}</code> ({esc(target.description or '')})",
             f"Method: <code>{esc(report.method or '?')}</code>, budget: {esc(format_budget(report.budget))}"]
    if report.input_shape:
        line = f"Costs at the deployment input {esc('x'.join(map(str, report.input_shape)))}"
        res = report.train_resolution
        if res:
            line += f"; trained and evaluated at {esc(res)}x{esc(res)}"
        data = report.data
        if data:
            line += f" on {esc(data.source)} ({esc(data.train)} train / {esc(data.val)} val images)"
        items.append(line)
    lat_c = report.latency.compressed
    if lat_c:
        items.append(f"Latency: {esc(lat_c.runtime)} on {esc(lat_c.device)}, batch {esc(lat_c.batch)}, "
                     f"{esc(lat_c.warmup)} warm-up + {esc(lat_c.runs)} timed runs, "
                     f"threads {esc(lat_c.threads or 'default')}")
    if report.out:
        items.append(f"Run directory: <code>{esc(report.out)}</code>")
    return "<ul class=\"facts\">" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


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


def _cell(value) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value))
    return f"{value:.3f}" if isinstance(value, float) else value


def _measurement(report: RunReport) -> str:
    cols = [(side, stats) for side in ("baseline", "compressed") if (stats := getattr(report.latency, side))]
    if not cols:
        return ""
    keys = ["runtime", "device", "batch", "input_shape", "warmup", "runs", "threads", "mean", "std", "throughput"]
    rows = [[key, *[_cell(getattr(s, key)) for _, s in cols]] for key in keys]
    if any(s.versions for _, s in cols):
        rows.append(["versions", *[", ".join(f"{k} {v}" for k, v in s.versions.items()) for _, s in cols]])
    rows.append(["settings", *[json.dumps(s.settings, sort_keys=True) for _, s in cols]])
    return "<h2>Measurement</h2>" + table(["", *[side for side, _ in cols]], rows, numeric_from=99)


def _onnx(report: RunReport) -> str:
    onnx = report.onnx
    if not onnx:
        return ""
    ok = "ok" if onnx.checker == "passed" else "bad"
    items = (f"<li>File: <code>{esc(onnx.path)}</code>, opset {esc(onnx.opset)}</li>"
             f"<li>ONNX checker: <span class=\"{ok}\">{esc(onnx.checker)}</span></li>")
    if onnx.max_abs_diff is not None:
        items += f"<li>max |onnxruntime - PyTorch| = {esc(f'{onnx.max_abs_diff:.2e}')}</li>"
    return f"<h2>ONNX export and parity</h2><ul>{items}</ul>"


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
                row += [r["original"], _pct(r["kept"], r["original"])] if r["original"] else ["-", "-"]
            row.append(f"block {r['dropped_block']} dropped" if r["dropped_block"] else "")
            trows.append(row)
        out.append(table(header, trows))
    if architecture.cell_edges:
        out.append(f"<p>Cell edges:</p><pre>{esc(json.dumps(architecture.cell_edges, indent=1))}</pre>")
    return "".join(out)


def _latency_plot(report: RunReport, plots: Plots) -> list[str]:
    if not plots.enabled:
        return [plots.missing()]
    orig, comp = report.latency.baseline, report.latency.compressed
    device = f"{comp.device if comp else ''} ({comp.runtime if comp else ''})"
    groups = [(report.model, orig and dataclasses.asdict(orig), comp and dataclasses.asdict(comp))]
    return ["<h2>Latency</h2>", plots.img(lambda: latency_figure([(f"{report.model} on {device}", groups)]),
                                          "latency", "latency p50 with p90 and p99, original vs compressed")]


def _lists(report: RunReport) -> list[str]:
    """Layers left fixed, notes and stage timings."""
    parts = []
    if report.fixed_layers:
        items = "".join(f"<li><code>{esc(', '.join(map(str, e.layers)))}</code>: {esc(e.reason)}</li>"
                        for e in report.fixed_layers)
        parts.append(f"<h2>Layers left fixed</h2><ul>{items}</ul>")
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in report.notes) + "</ul>")
    if report.timings_s:
        trows = [[k, f"{v:.1f}"] for k, v in report.timings_s.items()]
        trows.append(["total", f"{sum(report.timings_s.values()):.1f}"])
        parts += ["<h2>Stage timings</h2>", table(["stage", "seconds"], trows)]
    return parts


def html_report(report: RunReport, plots_dir=None) -> str:
    """Render a run report as a self-contained HTML page.

    Plots are embedded as base64 PNG unless ``plots_dir`` is given: then they are written there as
    PNG files and the page links them relative to ``plots_dir``'s parent folder.
    """
    plots = Plots(plots_dir)
    header, rows = summary_rows(report)
    parts = [f"<h1>Compression report: {esc(report.model)}</h1>", _facts(report),
             "<h2>Summary</h2>", table(header, rows), *_latency_plot(report, plots)]
    if report.target:
        parts += ["<h2>Target profile</h2>", kv_table(profile_items(report.target))]
    parts += [_measurement(report), _onnx(report)]
    if report.architecture:
        parts += ["<h2>Architecture</h2>", architecture_section(report.architecture, plots)]
    parts += _lists(report)
    return page(f"Compression report: {report.model}", "\n".join(p for p in parts if p))


def write_html(out_dir, report: RunReport, inline: bool = True) -> Path:
    """Write ``report.html`` into ``out_dir`` atomically; with ``inline=False`` the plots go to
    ``out_dir/plots/*.png`` instead of into the page. The page is rendered before anything is
    written, so a failure leaves no partial file."""
    out_dir = Path(out_dir)
    text = html_report(report, None if inline else out_dir / "plots")
    return write_text(out_dir / HTML_FILE, text)


__all__ = [
    "HTML_FILE",
    "Plots",
    "architecture_section",
    "html_report",
    "page",
    "profile_items",
    "summary_rows",
    "table",
    "write_html",
]

"""``report.html``: one run's report as a single self-contained HTML page.

The page carries the summary table of ``report.md``, the target profile and its notes (power
mode, clocks), how latency was measured, the ONNX parity check, the architecture (kept channels
per group, dropped blocks), layers left fixed, notes and stage timings, plus plots rendered with
matplotlib's Agg canvas and embedded as base64 PNG, so the file stands alone: no external CSS,
JS or images. Every piece of text from the report goes through :func:`html.escape`.

Plots need matplotlib; without it the page is written without them (and says so). The helpers
here (:func:`latency_figure`, :func:`widths_figure`, :func:`scatter_figure`, :class:`Plots`,
:func:`page`, :func:`table`) are shared with :mod:`compressor.merge`.
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

from .fileio import write_atomic, write_text
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

ORIGINAL_COLOR = "#9aa5b1"
COMPRESSED_COLOR = "#2a6fb0"
DROPPED_COLOR = "#b42318"
DEVICE_COLORS = ["#2a6fb0", "#d9822b", "#17803d", "#8e44ad", "#b42318", "#0f9b9b", "#6b7280", "#c2185b"]


# --------------------------------------------------------------------------------------------
# HTML helpers
# --------------------------------------------------------------------------------------------


def esc(value) -> str:
    """HTML-escape ``str(value)`` (quotes too, so the result is safe in attributes)."""
    return html.escape(str(value), quote=True)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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


def _mt(text) -> str:
    """Text for matplotlib: a ``$`` would start mathtext (and can make rendering fail)."""
    return str(text).replace("$", r"\$")


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas: no pyplot, no global backend, no window."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


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
            return f'<p class="note">The {esc(name)} plot could not be drawn ({esc(type(exc).__name__)}: {esc(exc)}).</p>'

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


def _draw_latency_bars(ax, groups: Sequence[tuple], show_legend: bool = True) -> None:
    """Bars of p50 with a whisker up to p99 and a tick at p90, original and compressed side by side.

    ``groups``: ``(label, original_stats | None, compressed_stats | None)``.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    width = 0.38
    for i, (label, orig, comp) in enumerate(groups):
        for offset, stats, color in ((-width / 2, orig, ORIGINAL_COLOR), (width / 2, comp, COMPRESSED_COLOR)):
            if not stats:
                continue
            x = i + offset
            p50, p90, p99 = stats["p50"], stats["p90"], stats["p99"]
            ax.bar(x, p50, width=width * 0.95, color=color, zorder=2)
            ax.vlines(x, p50, p99, color="#1d1d1f", linewidth=1, zorder=3)
            ax.plot([x], [p90], marker="_", markersize=12, color="#1d1d1f", zorder=3)
            ax.plot([x], [p99], marker="_", markersize=7, color="#1d1d1f", zorder=3)
            ax.annotate(f"{p50:.3g}", (x, p99), xytext=(0, 3), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([_mt(g[0]) for g in groups], rotation=20 if len(groups) > 3 else 0,
                       ha="right" if len(groups) > 3 else "center", fontsize=8)
    ax.set_ylabel("latency (ms)")
    tops = [s["p99"] for _, *pair in groups for s in pair if s]
    ax.set_ylim(0, 1.15 * max(tops) if tops and max(tops) > 0 else 1.0)
    ax.grid(axis="y", color="#e5e7eb", zorder=0)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    if show_legend:
        ax.legend(handles=[Patch(color=ORIGINAL_COLOR, label="original p50"),
                           Patch(color=COMPRESSED_COLOR, label="compressed p50"),
                           Line2D([], [], color="#1d1d1f", marker="_", markersize=10, label="p90 tick, p99 whisker top")],
                  fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def latency_figure(panels: Sequence[tuple]):
    """One panel per device: ``(title, groups)`` with ``groups`` as in :func:`_draw_latency_bars`."""
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    n_groups = max(len(g) for _, g in panels)
    fig = new_figure(max(5.0, min(16.0, 2.0 + 1.3 * n_groups)), 3.2 * len(panels))
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for i, (ax, (title, groups)) in enumerate(zip(axes, panels)):
        _draw_latency_bars(ax, groups, show_legend=i == 0)
        ax.set_title(_mt(title), fontsize=9)
    fig.tight_layout()
    return fig


def natural_key(name: str):
    """Sort ``layer10`` after ``layer2``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))]


def full_widths(architecture: dict) -> dict:
    """Original channel counts per group, where the report has them (``full_widths``)."""
    for key in ("full_widths", "original_widths"):
        value = architecture.get(key)
        if isinstance(value, dict):
            return value
    return {}


def width_rows(architecture: dict) -> list[dict]:
    """Per group: name, kept width, original width (or None), whether its block was dropped."""
    widths = architecture.get("widths") or {}
    originals = full_widths(architecture)
    dropped = list(architecture.get("dropped_blocks") or [])
    rows = []
    for name in sorted(widths, key=natural_key):
        block = next((b for b in dropped if name == b or name.startswith(b + ".")), None)
        rows.append({"group": name, "kept": widths[name], "original": originals.get(name), "dropped_block": block})
    return rows


def widths_figure(architecture: dict, title: str = ""):
    """Horizontal bars of kept / original channels per group (kept channels if originals are
    unknown); groups inside a dropped block are marked. None when there are no width decisions."""
    rows = width_rows(architecture)
    if not rows:
        return None
    ratio = all(r["original"] for r in rows)
    n = len(rows)
    fig = new_figure(7.5, min(40.0, 1.3 + 0.22 * n))
    ax = fig.add_subplot(1, 1, 1)
    ys = list(range(n))[::-1]
    for y, r in zip(ys, rows):
        if r["dropped_block"]:
            ax.barh(y, 0, color=DROPPED_COLOR)
            ax.text(0.005 if ratio else 0, y, f"  x block {_mt(r['dropped_block'])} dropped", va="center",
                    fontsize=7, color=DROPPED_COLOR)
            continue
        value = r["kept"] / r["original"] if ratio else r["kept"]
        ax.barh(y, value, color=COMPRESSED_COLOR, height=0.75, zorder=2)
        label = f"{r['kept']}/{r['original']}" if ratio else f"{r['kept']}"
        ax.text(value, y, f" {label}", va="center", fontsize=7)
    ax.set_yticks(ys)
    ax.set_yticklabels([_mt(r["group"]) for r in rows], fontsize=7)
    ax.set_ylim(-0.7, n - 0.3)
    if ratio:
        ax.set_xlim(0, 1.18)
        ax.axvline(1.0, color="#6b7280", linewidth=0.8, linestyle="--")
        ax.set_xlabel("kept / original channels")
    else:
        ax.set_xlim(0, max(r["kept"] for r in rows) * 1.18)
        ax.set_xlabel("kept channels (original widths not in the report)")
    ax.grid(axis="x", color="#e5e7eb", zorder=0)
    dropped = architecture.get("dropped_blocks") or []
    head = f"{title}: " if title else ""
    ax.set_title(_mt(f"{head}kept channels per group; dropped blocks: {', '.join(dropped) or 'none'}"),
                 fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def scatter_figure(series: Sequence[dict]):
    """Accuracy against p50 latency. ``series``: ``{"device", "points": [{"run", "original":
    (ms, acc) | None, "compressed": (ms, acc) | None}]}``; one colour per device, original points
    hollow and joined to their compressed point."""
    from matplotlib.lines import Line2D

    xs = [p[k][0] for s in series for p in s["points"] for k in ("original", "compressed") if p.get(k)]
    if not xs:
        return None
    fig = new_figure(7.5, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    handles = []
    for i, s in enumerate(series):
        color = DEVICE_COLORS[i % len(DEVICE_COLORS)]
        for p in s["points"]:
            o, c = p.get("original"), p.get("compressed")
            if o and c:
                ax.plot([o[0], c[0]], [100 * o[1], 100 * c[1]], color=color, linewidth=0.8, alpha=0.6)
            if o:
                ax.scatter([o[0]], [100 * o[1]], s=36, facecolors="none", edgecolors=color, zorder=3)
            if c:
                ax.scatter([c[0]], [100 * c[1]], s=36, color=color, zorder=3)
                ax.annotate(_mt(p["run"]), (c[0], 100 * c[1]), xytext=(4, 3), textcoords="offset points", fontsize=7)
        handles.append(Line2D([], [], color=color, marker="o", linestyle="", label=_mt(s["device"])))
    handles += [Line2D([], [], color="#1d1d1f", marker="o", linestyle="", markerfacecolor="none", label="original"),
                Line2D([], [], color="#1d1d1f", marker="o", linestyle="", label="compressed")]
    if max(xs) / max(min(xs), 1e-9) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("latency p50 (ms)")
    ax.set_ylabel("val accuracy (%)")
    ax.grid(color="#e5e7eb")
    ax.legend(handles=handles, fontsize=7, frameon=False, loc="best")
    ax.set_title("accuracy vs latency", fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


def _pct(new, old) -> str:
    return f"{100 * new / old:.1f}%" if old else "-"


def summary_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table, formatted like ``report.md``'s."""
    b, c = report.get("baseline"), report["compressed"]
    lat = report.get("latency") or {}
    lat_c = lat.get("compressed") or c.get("latency_ms") or {}
    lat_b = lat.get("baseline") or (b or {}).get("latency_ms")
    if b is None:
        rows = [["MACs", format_count(c["macs"])], ["params", format_count(c["params"])],
                ["val accuracy", f"{100 * c['accuracy']:.2f}%"]]
        rows += [[f"latency {k} (ms)", f"{lat_c[k]:.3f}"] for k in ("p50", "p90", "p99") if k in lat_c]
        if "throughput" in lat_c:
            rows.append(["throughput (inf/s)", f"{lat_c['throughput']:.1f}"])
        return ["", "model"], rows
    rows = [
        ["MACs", format_count(b["macs"]), format_count(c["macs"]), _pct(c["macs"], b["macs"])],
        ["params", format_count(b["params"]), format_count(c["params"]), _pct(c["params"], b["params"])],
        ["val accuracy", f"{100 * b['accuracy']:.2f}%", f"{100 * c['accuracy']:.2f}%", ""],
    ]
    if lat_b and lat_c:
        rows += [[f"latency {k} (ms)", f"{lat_b[k]:.3f}", f"{lat_c[k]:.3f}", _pct(lat_c[k], lat_b[k])]
                 for k in ("p50", "p90", "p99")]
        if "throughput" in lat_b and "throughput" in lat_c:
            rows.append(["throughput (inf/s)", f"{lat_b['throughput']:.1f}", f"{lat_c['throughput']:.1f}", ""])
    return ["", "baseline", "compressed", "ratio"], rows


def format_budget(budget: dict) -> str:
    parts = []
    for k, v in (budget or {}).items():
        if v is None:
            continue
        parts.append(f"{k} <= {v:g} ms" if k == "latency_ms" else f"{k} <= {format_count(v)}")
    return ", ".join(parts) or "none"


def _facts(report: dict) -> str:
    target = report.get("target") or {}
    items = [f"Target: <code>{esc(target.get('name', '?'))}</code> ({esc(target.get('description', ''))})",
             f"Method: <code>{esc(report.get('method', '?'))}</code>, budget: {esc(format_budget(report.get('budget')))}"]
    shape = report.get("input_shape")
    data = report.get("data") or {}
    if shape:
        line = f"Costs at the deployment input {esc('x'.join(map(str, shape)))}"
        res = report.get("train_resolution")
        if res:
            line += f"; trained and evaluated at {esc(res)}x{esc(res)}"
        if data:
            line += (f" on {esc(data.get('source', '?'))} ({esc(data.get('train', '?'))} train / "
                     f"{esc(data.get('val', '?'))} val images)")
        items.append(line)
    lat_c = (report.get("latency") or {}).get("compressed")
    if lat_c:
        items.append(f"Latency: {esc(lat_c.get('runtime'))} on {esc(lat_c.get('device'))}, batch "
                     f"{esc(lat_c.get('batch'))}, {esc(lat_c.get('warmup'))} warm-up + {esc(lat_c.get('runs'))} "
                     f"timed runs, threads {esc(lat_c.get('threads') or 'default')}")
    if report.get("out"):
        items.append(f"Run directory: <code>{esc(report['out'])}</code>")
    return "<ul class=\"facts\">" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def profile_items(target: dict) -> list[tuple]:
    """Key/value rows describing a target profile, its notes (power mode, clocks, ...) last."""
    items = []
    for key in ("name", "description", "device", "precision", "batch"):
        if target.get(key) is not None:
            items.append((key, target[key]))
    if target.get("runtimes"):
        items.append(("runtimes", ", ".join(map(str, target["runtimes"]))))
    if target.get("input_shape"):
        items.append(("profile input shape", "x".join(map(str, target["input_shape"]))))
    if target.get("channel_multiple"):
        items.append(("channel multiple", target["channel_multiple"]))
    measure = target.get("measure") or {}
    if measure:
        items.append(("measurement", ", ".join(f"{k} {v}" for k, v in measure.items())))
    for k, v in (target.get("notes") or {}).items():
        items.append((k.replace("_", " "), v))
    if target.get("source"):
        items.append(("profile file", target["source"]))
    return items


def _measurement(report: dict) -> str:
    lat = report.get("latency") or {}
    cols = [(k, lat[k]) for k in ("baseline", "compressed") if isinstance(lat.get(k), dict)]
    if not cols:
        return ""
    keys = ["runtime", "device", "batch", "input_shape", "warmup", "runs", "threads", "mean", "std", "throughput"]
    rows = []
    for key in keys:
        vals = []
        for _, s in cols:
            v = s.get(key)
            if isinstance(v, list):
                v = "x".join(map(str, v))
            elif isinstance(v, float):
                v = f"{v:.3f}"
            vals.append("-" if v is None else v)
        rows.append([key, *vals])
    versions = {k: v for _, s in cols for k, v in (s.get("versions") or {}).items()}
    if versions:
        rows.append(["versions", *[", ".join(f"{k} {v}" for k, v in (s.get("versions") or {}).items())
                                   for _, s in cols]])
    settings = [json.dumps(s.get("settings") or {}, sort_keys=True) for _, s in cols]
    rows.append(["settings", *settings])
    return "<h2>Measurement</h2>" + table(["", *[k for k, _ in cols]], rows, numeric_from=99)


def _onnx(report: dict) -> str:
    onnx = report.get("onnx")
    if not onnx:
        return ""
    diff = onnx.get("max_abs_diff")
    checker = onnx.get("checker")
    ok = "ok" if checker == "passed" else "bad"
    items = (f"<li>File: <code>{esc(onnx.get('path'))}</code>, opset {esc(onnx.get('opset'))}</li>"
             f"<li>ONNX checker: <span class=\"{ok}\">{esc(checker)}</span></li>")
    if _is_num(diff):
        items += f"<li>max |onnxruntime - PyTorch| = {esc(f'{diff:.2e}')}</li>"
    return f"<h2>ONNX export and parity</h2><ul>{items}</ul>"


def architecture_section(architecture: dict, plots: Plots, name: str = "widths", title: str = "") -> str:
    """Kept-channels plot and table, dropped blocks, DAG cell edges (NAS runs)."""
    out = []
    blocks = architecture.get("blocks") or {}
    dropped = architecture.get("dropped_blocks") or []
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
                row += [r["original"] if r["original"] else "-", _pct(r["kept"], r["original"]) if r["original"] else "-"]
            row.append(f"block {r['dropped_block']} dropped" if r["dropped_block"] else "")
            trows.append(row)
        out.append(table(header, trows))
    edges = architecture.get("cell_edges")
    if edges:
        out.append(f"<p>Cell edges:</p><pre>{esc(json.dumps(edges, indent=1))}</pre>")
    return "".join(out)


def html_report(report: dict, plots_dir=None) -> str:
    """Render a run report (the dict of ``report.json``) as a self-contained HTML page.

    Plots are embedded as base64 PNG unless ``plots_dir`` is given: then they are written there as
    PNG files and the page links them relative to ``plots_dir``'s parent folder.
    """
    plots = Plots(plots_dir)
    model = report.get("model", "?")
    parts = [f"<h1>Compression report: {esc(model)}</h1>", _facts(report)]

    header, rows = summary_rows(report)
    parts += ["<h2>Summary</h2>", table(header, rows)]

    lat = report.get("latency") or {}
    orig = lat.get("baseline") or (report.get("baseline") or {}).get("latency_ms")
    comp = lat.get("compressed") or report["compressed"].get("latency_ms")
    if plots.enabled:
        device = f"{(comp or {}).get('device', '')} ({(comp or {}).get('runtime', '')})"
        parts += ["<h2>Latency</h2>", plots.img(lambda: latency_figure([(f"{model} on {device}", [(str(model), orig, comp)])]),
                                               "latency", "latency p50 with p90 and p99, original vs compressed")]
    else:
        parts.append(plots.missing())

    target = report.get("target") or {}
    if target:
        parts += ["<h2>Target profile</h2>", kv_table(profile_items(target))]
    parts.append(_measurement(report))
    parts.append(_onnx(report))

    architecture = report.get("architecture") or {}
    if architecture:
        parts += ["<h2>Architecture</h2>", architecture_section(architecture, plots)]

    fixed = report.get("fixed_layers") or []
    if fixed:
        items = "".join(
            f"<li><code>{esc(', '.join(map(str, e.get('layers', []))))}</code>: {esc(e.get('reason', ''))}</li>"
            for e in fixed)
        parts.append(f"<h2>Layers left fixed</h2><ul>{items}</ul>")

    notes = report.get("notes") or []
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")

    timings = report.get("timings_s") or {}
    if timings:
        trows = [[k, f"{v:.1f}"] for k, v in timings.items() if _is_num(v)]
        trows.append(["total", f"{sum(v for v in timings.values() if _is_num(v)):.1f}"])
        parts += ["<h2>Stage timings</h2>", table(["stage", "seconds"], trows)]

    return page(f"Compression report: {model}", "\n".join(p for p in parts if p))


def write_html(out_dir, report: dict, inline: bool = True) -> Path:
    """Write ``report.html`` into ``out_dir`` atomically; with ``inline=False`` the plots go to
    ``out_dir/plots/*.png`` instead of into the page. The page is rendered before anything is
    written, so a failure leaves no partial file."""
    out_dir = Path(out_dir)
    text = html_report(report, None if inline else out_dir / "plots")
    return write_text(out_dir / HTML_FILE, text)


__all__ = [
    "HTML_FILE",
    "html_report",
    "latency_figure",
    "scatter_figure",
    "summary_rows",
    "widths_figure",
    "write_html",
]

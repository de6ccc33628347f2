"""The plots of report.html and the merged report, drawn with matplotlib's Agg canvas (no pyplot,
no global backend): latency bars, kept channels per group, accuracy against latency. Each returns a
Figure (None when there is nothing to draw); :class:`compressor.report_html.Plots` embeds them.
"""
from __future__ import annotations

from collections.abc import Sequence

from .run_report import ArchitectureInfo

ORIGINAL_COLOR = "#9aa5b1"
COMPRESSED_COLOR = "#2a6fb0"
DROPPED_COLOR = "#b42318"
DEVICE_COLORS = ["#2a6fb0", "#d9822b", "#17803d", "#8e44ad", "#b42318", "#0f9b9b", "#6b7280", "#c2185b"]


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


def _draw_latency_bars(ax, groups: Sequence[tuple], show_legend: bool = True) -> None:
    """Bars of p50 with a whisker up to p99 and a tick at p90, original and compressed side by side.

    ``groups``: ``(label, original_stats | None, compressed_stats | None)``.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    width = 0.38
    for i, (_, orig, comp) in enumerate(groups):
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
                           Line2D([], [], color="#1d1d1f", marker="_", markersize=10,
                                  label="p90 tick, p99 whisker top")],
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


def width_rows(architecture: ArchitectureInfo) -> list[dict]:
    """Per group, in the report's order (a run lists its groups in model order): name, kept width,
    original width (or None), whether its block was dropped."""
    widths, originals = architecture.widths or {}, architecture.full_widths or {}
    dropped = architecture.dropped_blocks
    rows = []
    for name in widths:
        block = next((b for b in dropped if name == b or name.startswith(b + ".")), None)
        rows.append({"group": name, "kept": widths[name], "original": originals.get(name), "dropped_block": block})
    return rows


def widths_figure(architecture: ArchitectureInfo, title: str = ""):
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
    dropped = architecture.dropped_blocks
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


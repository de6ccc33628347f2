"""The plots of one run's report.html beyond the latency bars and kept channels
(:mod:`compressor.report_plots`): accuracy against MACs and against latency (the original, the
compressed and low-precision models, and every snapshot or candidate the search scored), the
training curves, and the search trace. Each returns a Figure, or None when there is nothing to draw.
"""
from __future__ import annotations

import dataclasses
import math

from .report_content import NOT_TRACED
from .report_plots import COMPRESSED_COLOR, DEVICE_COLORS, ORIGINAL_COLOR, _mt, new_figure
from .report_uncertainty import accuracy_se
from .report_warnings import validation_images
from .run_report import RunReport
from .units import format_count

PRECISION_COLOR = "#17803d"
SEARCH_COLOR = "#d9822b"
MAX_TRACE_PANELS = 6


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def search_points(history: list, x_key: str) -> tuple[list, list]:
    """``(snapshots, candidates)``: ``(x, accuracy)`` of each search record and of each candidate it
    scored that has a numeric ``accuracy`` and ``x_key`` (``macs`` or ``measured_ms``)."""
    snaps, cands = [], []
    for r in history or []:
        if not isinstance(r, dict):
            continue
        if _number(r.get("accuracy")) and _number(r.get(x_key)):
            snaps.append((r[x_key], r["accuracy"]))
        for c in r.get("candidates") or []:
            if isinstance(c, dict) and _number(c.get("accuracy")) and _number(c.get(x_key)):
                cands.append((c[x_key], c["accuracy"]))
    return snaps, cands


def model_points(report: RunReport, axis: str) -> list[dict]:
    """The original, compressed and low-precision models: ``label``, ``x`` (MACs for ``axis="macs"``,
    the measured p50 in ms for ``axis="latency"``), ``acc``, ``color``, the accuracy's standard error
    ``acc_se`` and, on the latency axis, the range of the rounds ``x_range`` (low, high) or None."""
    lat, p = report.latency, report.precision
    n = validation_images(report)
    models = [("original", report.baseline, lat.baseline, ORIGINAL_COLOR, n),
              ("compressed", report.compressed, lat.compressed, COMPRESSED_COLOR, n)]
    if p is not None and p.file:
        models.append((p.precision, dataclasses.replace(report.compressed, accuracy=p.accuracy), lat.precision,
                       PRECISION_COLOR, p.images))
    out = []
    for label, costs, stats, color, images in models:
        if costs is None or (axis != "macs" and stats is None):
            continue
        x = costs.macs if axis == "macs" else stats.p50
        x_range = (min(stats.rounds), max(stats.rounds)) if axis != "macs" and stats.rounds else None
        out.append({"label": label, "x": x, "acc": costs.accuracy, "color": color, "x_range": x_range,
                    "acc_se": accuracy_se(costs.accuracy, images) if images else 0.0})
    return out


def tradeoff_figure(report: RunReport, history: list | None, axis: str):
    """Accuracy against MACs (``axis="macs"``) or measured p50 latency (``axis="latency"``); the
    search's own points use its proxy accuracy (fewer images, maybe a smaller input)."""
    models = model_points(report, axis)
    snaps, cands = search_points(history or [], "macs" if axis == "macs" else "measured_ms")
    if len(models) + len(snaps) < 2:
        return None
    fig = new_figure(7.5, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    if cands:
        ax.scatter([x for x, _ in cands], [100 * a for _, a in cands], s=10, color=SEARCH_COLOR, alpha=0.25,
                   label=f"candidates scored by the search ({len(cands)}, proxy accuracy)")
    if snaps:
        ax.plot([x for x, _ in snaps], [100 * a for _, a in snaps], marker=".", color=SEARCH_COLOR, linewidth=0.8,
                label=f"search snapshots ({len(snaps)}, proxy accuracy)")
    for m in models:
        x, y = m["x"], 100 * m["acc"]
        xerr = [[x - m["x_range"][0]], [m["x_range"][1] - x]] if m["x_range"] else None
        ax.errorbar([x], [y], yerr=[100 * m["acc_se"]], xerr=xerr, fmt="none", ecolor=m["color"], capsize=3,
                    zorder=3)
        ax.scatter([x], [y], s=60, color=m["color"], zorder=4, edgecolors="#1d1d1f", label=_mt(m["label"]))
        ax.annotate(_mt(m["label"]), (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    xs = [m["x"] for m in models] + [x for x, _ in snaps + cands]
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    label = (lambda v, _: format_count(v) if v > 0 else "0") if axis == "macs" else (lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(FuncFormatter(label))
    ax.set_xlabel("MACs" if axis == "macs" else "latency p50 (ms), measured; bars: the rounds' range")
    ax.set_ylabel("val accuracy (%); bars: ± 1 standard error")
    ax.set_ylabel("val accuracy (%)")
    ax.grid(color="#e5e7eb")
    ax.legend(fontsize=7, frameon=False, loc="best")
    ax.set_title(f"accuracy vs {'MACs' if axis == 'macs' else 'latency'}", fontsize=9)
    fig.tight_layout()
    return fig


def curves_figure(training: dict | None):
    """Per training (teacher, fine-tune): loss and accuracies (train, validation) per epoch."""
    from matplotlib.ticker import MaxNLocator

    panels = [(name, records) for name, records in (training or {}).items() if records]
    if not panels:
        return None
    fig = new_figure(7.5, 2.8 * len(panels))
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (name, records) in zip(axes, panels):
        epochs = [r.get("epoch", i + 1) for i, r in enumerate(records)]
        ax.plot(epochs, [r.get("loss") for r in records], color="#1d1d1f", marker="o", markersize=3, label="loss")
        ax.set_ylabel("loss")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        acc = ax.twinx()
        for key, color, label in (("train_acc", ORIGINAL_COLOR, "train acc"), ("val_acc", COMPRESSED_COLOR,
                                                                              "val acc")):
            if any(key in r for r in records):
                acc.plot(epochs, [100 * r[key] if key in r else None for r in records], color=color, marker="o",
                         markersize=3, label=label)
        acc.set_ylabel("accuracy (%)")
        handles = ax.get_legend_handles_labels()[0] + acc.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize=7, frameon=False, loc="center right")
        ax.set_title(_mt(f"{name}: {len(records)} epochs"), fontsize=9, loc="left")
        ax.grid(color="#e5e7eb")
    fig.tight_layout()
    return fig


def trace_series(history: list) -> dict[str, list]:
    """The search's numeric figures per record (nested objects one level deep as ``outer.inner``),
    in the order they first appear; ``None`` where a record lacks one."""
    names: dict[str, None] = {}
    flat = []
    for r in history or []:
        if not isinstance(r, dict):
            continue
        row = {}
        for k, v in r.items():
            if k in NOT_TRACED:
                continue
            if _number(v):
                row[k] = v
            elif isinstance(v, dict):
                row.update({f"{k}.{ik}": iv for ik, iv in v.items() if _number(iv)})
        names.update(dict.fromkeys(row))
        flat.append(row)
    return {n: [row.get(n) for row in flat] for n in names if sum(row.get(n) is not None for row in flat) > 0}


def trace_figure(method: str | None, history: list | None):
    """The search trace: one small panel per figure the records carry (the first
    :data:`MAX_TRACE_PANELS`), against the record's index (epoch, step or move)."""
    series = trace_series(history or [])
    if not series:
        return None
    names = list(series)[:MAX_TRACE_PANELS]
    cols = 2 if len(names) > 1 else 1
    rows = math.ceil(len(names) / cols)
    fig = new_figure(7.5, 2.1 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, (ax, name) in enumerate(zip(axes, names)):
        values = series[name]
        xs = [j + 1 for j, v in enumerate(values) if v is not None]
        ax.plot(xs, [v for v in values if v is not None], color=DEVICE_COLORS[i % len(DEVICE_COLORS)],
                marker="." if len(xs) < 60 else None, linewidth=1)
        ax.set_title(_mt(name), fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        ax.grid(color="#e5e7eb")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle(_mt(f"search trace of {method or 'the search'} ({len(history)} records)"), fontsize=9)
    fig.tight_layout()
    return fig


__all__ = ["curves_figure", "model_points", "search_points", "trace_figure", "trace_series", "tradeoff_figure"]

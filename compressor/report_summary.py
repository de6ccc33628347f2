"""The summary table of a run report, shared by report.md, report.html and the CLI's last lines:
costs, accuracy with its standard error and validation size, latency with the spread of its rounds,
and ratios with their ranges, each to the digits the data supports
(:mod:`compressor.report_uncertainty`)."""
from __future__ import annotations

import math

from exporters.stats import LatencyStats

from .report_uncertainty import (
    accuracy_text,
    decimals_for,
    difference_se,
    latency_text,
    percentile_text,
    speedup,
    speedup_text,
)
from .report_warnings import validation_images, warnings_of
from .run_report import RunReport
from .units import format_count


def pct(new: float, old: float) -> str:
    """``new`` as a percentage of ``old``."""
    return f"{100 * new / old:.1f}%" if old else "-"


def significant(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, without an exponent: 663, 2170, 0.0421."""
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    if exponent >= digits - 1:
        return f"{round(value, digits - 1 - exponent):.0f}"
    return f"{value:.{digits - 1 - exponent}f}"


def _tail(stats: LatencyStats | None, key: str) -> str:
    """p90 or p99 to the digits the p50's uncertainty supports; "" where not measured."""
    return "" if stats is None else percentile_text(stats, key)


def signed(value: float, decimals: int) -> str:
    """``value`` with its sign and ``decimals`` decimals; one that rounds to zero has no sign."""
    text = f"{value:+.{decimals}f}"
    return text[1:] if float(text) == 0 else text


def _difference(report: RunReport, n: int | None) -> str:
    b, c = report.baseline, report.compressed
    diff = 100 * (c.accuracy - b.accuracy)
    if not n:
        return f"{diff:+.1f} points"
    se = 100 * difference_se(b.accuracy, c.accuracy, n)
    d = min(decimals_for(se), 2) if se > 0 else 1
    return f"{signed(diff, d)} ± {se:.{d}f} points"


def _latency_rows(report: RunReport) -> list[list[str]]:
    lat_b, lat_c, lat_p = report.latency.baseline, report.latency.compressed, report.latency.precision
    if lat_c is None or lat_b is None:
        pred = report.predicted_latency_ms
        if pred is None:
            return [["latency to be measured on the target", "see the warnings", "", ""]]
        return [["latency p50, predicted by the table (ms)", f"{pred.baseline:.3g}", f"{pred.compressed:.3g}",
                 pct(pred.compressed, pred.baseline)]]
    s = speedup(lat_b, lat_c)
    rows = [["latency p50", latency_text(lat_b), latency_text(lat_c), f"speed-up {speedup_text(s)}"],
            ["latency p90 (ms)", _tail(lat_b, "p90"), _tail(lat_c, "p90"), ""],
            ["latency p99 (ms)", _tail(lat_b, "p99"), _tail(lat_c, "p99"), ""],
            ["throughput (inf/s)", significant(lat_b.throughput), significant(lat_c.throughput), ""]]
    precision = report.precision
    if lat_p is not None and precision is not None:
        rows.insert(1, [f"{precision.precision} model latency p50", "", latency_text(lat_p),
                        f"speed-up {speedup_text(speedup(lat_b, lat_p))}"])
    return rows


def _precision_row(report: RunReport) -> list[list[str]]:
    p = report.precision
    if p is None or not p.file:
        return []
    se = 100 * difference_se(p.fp32_accuracy, p.accuracy, p.images)
    d = min(decimals_for(se), 2) if se > 0 else 1
    where = f", at {p.input_shape[1]}x{p.input_shape[2]}" if p.input_shape else ""
    return [[f"{p.precision} model accuracy ({p.file}{where})", "", accuracy_text(p.accuracy, p.images),
             f"{signed(100 * (p.accuracy - p.fp32_accuracy), d)} ± {se:.{d}f} points vs fp32"]]


def summary_rows(report: RunReport) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table."""
    b, c = report.baseline, report.compressed
    lat_c = report.latency.compressed
    n = validation_images(report)
    if b is None:
        rows = [["MACs", format_count(c.macs)], ["params", format_count(c.params)],
                ["val accuracy", accuracy_text(c.accuracy, n)]]
        if lat_c is None:
            return ["", "model"], rows + [["latency to be measured on the target", "see the warnings"]]
        rows += [["latency p50", latency_text(lat_c)], ["latency p90 (ms)", _tail(lat_c, "p90")],
                 ["latency p99 (ms)", _tail(lat_c, "p99")], ["throughput (inf/s)", significant(lat_c.throughput)]]
        return ["", "model"], rows
    rows = [
        ["MACs", format_count(b.macs), format_count(c.macs), pct(c.macs, b.macs)],
        ["params", format_count(b.params), format_count(c.params), pct(c.params, b.params)],
        ["val accuracy", accuracy_text(b.accuracy, n), accuracy_text(c.accuracy, n), _difference(report, n)],
        *_precision_row(report),
        *_latency_rows(report),
    ]
    return ["", "original", "compressed", "change"], rows


def accuracy_where(report: RunReport) -> str:
    """Where the accuracies were measured, when the report says (version 3 on)."""
    res = report.resolution
    if res is None:
        return ""
    if report.exported_accuracy is not None:
        return (f"of the exported ONNX at {'x'.join(map(str, res.deployment))}, "
                f"on {report.exported_accuracy.images} images")
    return f"at the {res.evaluation}x{res.evaluation} proxy, not the deployment shape: see the report's notes"


def text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Rows as aligned plain-text lines (the first column left, the others right-aligned)."""
    table = [header, *rows]
    widths = [max(len(str(r[i])) for r in table if i < len(r)) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(w) if i == 0 else str(cell).rjust(w) for i, (cell, w) in
                      enumerate(zip(r, widths))).rstrip() for r in table]


def summary_text(report: RunReport) -> str:
    """What ``compress`` prints at the end of a run: the model, the summary table, every warning, and
    where the run was written."""
    header, rows = summary_rows(report)
    lines = [f"{report.model} ({report.method or 'nas'}):", *("  " + line for line in text_table(header, rows))]
    where = accuracy_where(report)
    if where:
        lines.append(f"  accuracy {where}")
    found = warnings_of(report)
    if found:
        lines.append(f"{len(found)} warning{'s' if len(found) > 1 else ''}:")
        lines += [f"  ! {w.message}" for w in found]
    else:
        lines.append("no warnings")
    return "\n".join(lines + [f"written to {report.out}"])


__all__ = ["accuracy_where", "pct", "summary_rows", "summary_text", "text_table"]

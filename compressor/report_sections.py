"""The sections of one run's report.html beyond the summary: warnings, accuracy trade-offs,
precision, training curves, search trace, slowest nodes, measurement and reproduce. Each returns
HTML (text from the report escaped), or "" when the report has nothing for it; plots go through a
:class:`compressor.report_html.Plots`. Each section is an ``<h2>`` with an ``id`` (its anchor)."""
from __future__ import annotations

from .report_content import (
    epoch_rows,
    measurement_settings,
    precision_items,
    reproduce_lead,
    sensitive_rows,
    slowest_rows,
    trace_summary,
)
from .report_html import Plots, esc, kv_table, table
from .report_run_plots import curves_figure, trace_figure, tradeoff_figure
from .report_warnings import warnings_of
from .run_report import RunReport

WARNINGS_CSS = """
.warnings li{margin:.35em 0}.warnings .kind{font-family:ui-monospace,monospace;color:#b42318;font-weight:600}
div.clean{color:#17803d;font-weight:600}
"""


def heading(anchor: str, title: str) -> str:
    """A section title with its anchor."""
    return f'<h2 id="{esc(anchor)}">{esc(title)}</h2>'


def warnings_section(report: RunReport) -> str:
    found = warnings_of(report)
    if not found:
        return heading("warnings", "Warnings") + '<div class="clean">No warnings: every check passed.</div>'
    items = "".join(f'<li><span class="kind">{esc(w.kind)}</span>: {esc(w.message)}</li>' for w in found)
    return heading("warnings", f"Warnings ({len(found)})") + f'<ul class="warnings">{items}</ul>'


def tradeoff_section(report: RunReport, history: list | None, plots: Plots) -> str:
    if not plots.enabled:
        return ""
    imgs = [plots.img(lambda: tradeoff_figure(report, history, "macs"), "accuracy_vs_macs",
                      "accuracy against MACs: original, compressed and the search's points"),
            plots.img(lambda: tradeoff_figure(report, history, "latency"), "accuracy_vs_latency",
                      "accuracy against measured latency")]
    imgs = [i for i in imgs if i]
    if not imgs:
        return ""
    return heading("tradeoff", "Accuracy vs MACs and latency") + "".join(imgs)


def precision_section(report: RunReport) -> str:
    items = precision_items(report)
    if not items:
        return ""
    header, rows = sensitive_rows(report)
    sensitive = ("<p>Layers most sensitive to the precision (accuracy with that layer alone in fp32):</p>"
                 + table(header, rows)) if rows else ""
    return heading("precision", "Precision") + kv_table(items) + sensitive


def training_section(report: RunReport, plots: Plots) -> str:
    training = {k: v for k, v in (report.training or {}).items() if v}
    if not training:
        return ""
    parts = [heading("training", "Training and fine-tuning curves")]
    if plots.enabled:
        parts.append(plots.img(lambda: curves_figure(training), "training", "loss and accuracy per epoch"))
    for name, records in training.items():
        parts += [f"<p>{esc(name)}:</p>", table(*epoch_rows(records), numeric_from=0)]
    return "".join(parts)


def search_section(report: RunReport, history: list | None, plots: Plots) -> str:
    if history is None:
        return ""
    lines = trace_summary(report.method, history)
    parts = [heading("search", "Search trace"),
             "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>"]
    if plots.enabled:
        parts.append(plots.img(lambda: trace_figure(report.method, history), "search_trace",
                               "the search's figures per step"))
    return "".join(parts)


def slowest_section(report: RunReport) -> str:
    header, rows = slowest_rows(report)
    if not rows:
        return ""
    return (heading("slowest", "Slowest nodes of the compressed model")
            + '<p class="note">onnxruntime\'s node profile, mean of 10 runs.</p>' + table(header, rows, numeric_from=2))


def measurement_section(report: RunReport) -> str:
    lat = report.latency
    cols = [(side, s) for side in ("baseline", "compressed", "precision") if (s := getattr(lat, side))]
    if not cols:
        return ""
    keys = ["runtime", "device", "batch", "input_shape", "warmup", "runs", "threads"]
    rows = [[key, *["x".join(map(str, v)) if isinstance(v := getattr(s, key), (list, tuple)) else v
                    for _, s in cols]] for key in keys]
    rows.append(["rounds (p50 of each, ms)", *[", ".join(f"{r:.3g}" for r in s.rounds) or "one block"
                                              for _, s in cols]])
    rows += [[key, *[f"{getattr(s, key):.4g}" for _, s in cols]] for key in ("mean", "std")]
    if any(s.versions for _, s in cols):
        rows.append(["versions", *[", ".join(f"{k} {v}" for k, v in s.versions.items()) for _, s in cols]])
    rows.append(["settings", *[measurement_settings(s.settings) for _, s in cols]])
    return heading("measurement", "Measurement") + table(["", *[side for side, _ in cols]], rows, numeric_from=99)


def reproduce_section(report: RunReport) -> str:
    rep = report.reproduce
    if rep is None:
        return ""
    process = (f"<p>The process that wrote it ran:</p><pre>{esc(rep.process)}</pre>"
               if rep.process and rep.process != rep.command else "")
    return (heading("reproduce", "Reproduce")
            + f"<p>{esc(reproduce_lead(report))}</p><pre>{esc(rep.command)}</pre>{process}"
            + "<p>With these versions (the settings in full are below):</p>" + kv_table(rep.versions.items()))


__all__ = ["WARNINGS_CSS", "heading", "measurement_section", "precision_section", "reproduce_section",
           "search_section", "slowest_section", "training_section", "tradeoff_section", "warnings_section"]

"""``report.html``: one run's report as a single self-contained HTML page.

In order: the facts (target, method, budget, data, how latency was measured), the warnings, the
summary table (with standard errors and ranges), accuracy against MACs and latency, the latency
bars, the precision, the training curves, the search trace, the kept channels per layer group, the
slowest nodes, the target profile, the measurement, the ONNX export, layers left fixed, notes,
stage timings and how to reproduce the run. Plots (matplotlib) are embedded as base64 PNG, so the
file stands alone; every piece of text from the report is escaped. Without matplotlib the page is
written without plots and says so.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from compress_base.fileio import write_text

from .report_html import (
    CSS,
    HTML_FILE,
    Plots,
    architecture_section,
    esc,
    format_budget,
    kv_table,
    page,
    profile_items,
    table,
)
from .report_plots import latency_figure
from .report_sections import (
    WARNINGS_CSS,
    heading,
    measurement_section,
    precision_section,
    reproduce_section,
    search_section,
    slowest_section,
    tradeoff_section,
    training_section,
    warnings_section,
)
from .report_summary import summary_rows
from .run_report import RunReport, Target


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
        rounds = f" in {len(lat_c.rounds)} interleaved rounds" if lat_c.rounds else ""
        items.append(f"Latency: {esc(lat_c.runtime)} on {esc(lat_c.device)}, batch {esc(lat_c.batch)}, "
                     f"{esc(lat_c.runs)} timed runs{esc(rounds)} ({esc(lat_c.warmup)} warm-up each), "
                     f"threads {esc(lat_c.threads or 'default')}")
    if report.out:
        items.append(f"Run directory: <code>{esc(report.out)}</code>")
    return "<ul class=\"facts\">" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _onnx(report: RunReport) -> str:
    onnx = report.onnx
    if not onnx:
        return ""
    ok = "ok" if onnx.checker == "passed" else "bad"
    items = (f"<li>File: <code>{esc(onnx.path)}</code>, opset {esc(onnx.opset)}</li>"
             f"<li>ONNX checker: <span class=\"{ok}\">{esc(onnx.checker)}</span></li>")
    if onnx.max_abs_diff is not None:
        items += f"<li>max |onnxruntime - PyTorch| = {esc(f'{onnx.max_abs_diff:.2e}')}</li>"
    items += ("<li>The file carries its input shape, class names, preprocessing and precision as ONNX metadata "
              "(<code>compress bench</code> shows them).</li>")
    return heading("onnx", "ONNX export and parity") + f"<ul>{items}</ul>"


def _latency_plot(report: RunReport, plots: Plots) -> list[str]:
    if not plots.enabled:
        return [plots.missing()]
    orig, comp = report.latency.baseline, report.latency.compressed
    device = f"{comp.device if comp else ''} ({comp.runtime if comp else ''})"
    groups = [(report.model, orig and dataclasses.asdict(orig), comp and dataclasses.asdict(comp))]
    img = plots.img(lambda: latency_figure([(f"{report.model} on {device}", groups)]), "latency",
                    "latency p50 with p90 and p99, original vs compressed")
    return [heading("latency", "Latency"), img] if img else []


def _lists(report: RunReport) -> list[str]:
    """Layers left fixed, notes and stage timings."""
    parts = []
    if report.fixed_layers:
        items = "".join(f"<li><code>{esc(', '.join(map(str, e.layers)))}</code>: {esc(e.reason)}</li>"
                        for e in report.fixed_layers)
        parts.append(heading("fixed", "Layers left fixed") + f"<ul>{items}</ul>")
    if report.notes:
        parts.append(heading("notes", "Notes") + "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in report.notes)
                     + "</ul>")
    if report.timings_s:
        trows = [[k, f"{v:.1f}"] for k, v in report.timings_s.items()]
        trows.append(["total", f"{sum(report.timings_s.values()):.1f}"])
        parts += [heading("timings", "Stage timings"), table(["stage", "seconds"], trows)]
    return parts


def _settings(report: RunReport) -> str:
    if not report.settings:
        return ""
    items = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in report.settings.items()]
    return "<p>Settings:</p>" + kv_table(items)


def html_report(report: RunReport, plots_dir=None, history: list | None = None) -> str:
    """Render a run report as a self-contained HTML page; ``history`` is the search's trace (its
    plots and summary are left out without it).

    Plots are embedded as base64 PNG unless ``plots_dir`` is given: then they are written there as
    PNG files and the page links them relative to ``plots_dir``'s parent folder.
    """
    plots = Plots(plots_dir)
    header, rows = summary_rows(report)
    parts = [f"<h1>Compression report: {esc(report.model)}</h1>", _facts(report), warnings_section(report),
             heading("summary", "Summary"), table(header, rows), tradeoff_section(report, history, plots),
             *_latency_plot(report, plots), precision_section(report), training_section(report, plots),
             search_section(report, history, plots)]
    if report.architecture:
        parts += [heading("architecture", "Kept channels per layer group (model order)"),
                  architecture_section(report.architecture, plots)]
    parts.append(slowest_section(report))
    if report.target:
        parts += [heading("target", "Target profile"), kv_table(profile_items(report.target))]
    parts += [measurement_section(report), _onnx(report), *_lists(report), reproduce_section(report),
              _settings(report)]
    return page(f"Compression report: {report.model}", "\n".join(p for p in parts if p),
                css=CSS + WARNINGS_CSS)


def write_html(out_dir, report: RunReport, inline: bool = True, history: list | None = None) -> Path:
    """Write ``report.html`` into ``out_dir`` atomically; with ``inline=False`` the plots go to
    ``out_dir/plots/*.png`` instead of into the page. The page is rendered before anything is
    written, so a failure leaves no partial file."""
    out_dir = Path(out_dir)
    text = html_report(report, None if inline else out_dir / "plots", history=history)
    return write_text(out_dir / HTML_FILE, text)


__all__ = ["html_report", "write_html"]

"""Run reports: ``report.json`` (all figures), ``report.md`` (the table a person reads),
``report.html`` (the same with plots, see ``compressor.report_html``) and the CLI's summary line,
all from a :class:`~compressor.run_report.RunReport`."""
from __future__ import annotations

from pathlib import Path

from compress_base.fileio import write_json, write_text

from .report_html import format_budget, write_html
from .run_report import RunReport
from .units import format_count

# Markdown text from a file stays text: no raw HTML, links, code spans or extra table cells.
_MD_ESCAPES = str.maketrans({"\\": "\\\\", "`": "\\`", "|": "\\|", "[": "\\[", "]": "\\]",
                             "&": "&amp;", "<": "&lt;", ">": "&gt;"})
_PCTS = ("p50", "p90", "p99")


def md_text(value) -> str:
    """``str(value)`` as inert Markdown on one line (HTML characters as entities, Markdown ones escaped)."""
    return " ".join(str(value).translate(_MD_ESCAPES).splitlines())


def _pct(new: float, old: float) -> str:
    return f"{100 * new / old:.1f}%" if old else "-"


def _latency_rows(report: RunReport) -> list[str]:
    """Latency rows when it was not measured here: the prediction, said to be one."""
    pred = report.predicted_latency_ms
    if pred is None:
        return ["| latency | not measured here (see the note) | | |"]
    b, c = pred.baseline, pred.compressed
    return [f"| latency, predicted by the table (ms) | {b:.3f} | {c:.3f} | {_pct(c, b)} |"]


def _table(report: RunReport) -> list[str]:
    b, c = report.baseline, report.compressed
    lat_b, lat_c = report.latency.baseline, report.latency.compressed
    if b is None:
        rows = ["| | model |", "|---|---:|",
                f"| MACs | {format_count(c.macs)} |", f"| params | {format_count(c.params)} |",
                f"| val accuracy | {100 * c.accuracy:.2f}% |"]
        if lat_c is None:
            return rows + ["| latency | not measured here (see the note) |"]
        rows += [f"| latency {k} (ms) | {getattr(lat_c, k):.3f} |" for k in _PCTS]
        return rows + [f"| throughput (inf/s) | {lat_c.throughput:.1f} |"]
    rows = [
        "| | baseline | compressed | ratio |",
        "|---|---:|---:|---:|",
        f"| MACs | {format_count(b.macs)} | {format_count(c.macs)} | {_pct(c.macs, b.macs)} |",
        f"| params | {format_count(b.params)} | {format_count(c.params)} | {_pct(c.params, b.params)} |",
        f"| val accuracy | {100 * b.accuracy:.2f}% | {100 * c.accuracy:.2f}% | |",
    ]
    if lat_c is None or lat_b is None:
        return rows + _latency_rows(report)
    rows += [f"| latency {k} (ms) | {getattr(lat_b, k):.3f} | {getattr(lat_c, k):.3f} | "
             f"{_pct(getattr(lat_c, k), getattr(lat_b, k))} |" for k in _PCTS]
    return rows + [f"| throughput (inf/s) | {lat_b.throughput:.1f} | {lat_c.throughput:.1f} | |"]


def _facts(report: RunReport) -> list[str]:
    """The bullet list under the title: target, method, costs' input, data, latency settings."""
    lat_c, target, data = report.latency.compressed, report.target, report.data
    lines = []
    if target is not None:
        lines.append(f"- Target: {md_text(target.name)} ({md_text(target.description)})")
    lines.append(f"- Method: {md_text(report.method)}, budget: {format_budget(report.budget)}")
    if report.input_shape:
        res = report.train_resolution
        line = f"- Costs at the deployment input {md_text('x'.join(map(str, report.input_shape)))}"
        line += f"; trained and evaluated at {res}x{res}" if res else ""
        if data is not None:
            line += f" on {md_text(data.source)} ({data.train} train / {data.val} val images)"
        lines.append(line)
    if not lat_c:
        return lines + ["- Latency: not measured on this machine (see the note)"]
    return lines + [f"- Latency: {md_text(lat_c.runtime)} on {md_text(lat_c.device)}, batch {lat_c.batch}, "
                    f"{lat_c.warmup} warm-up + {lat_c.runs} timed runs, threads {lat_c.threads or 'default'}"]


def _slowest_nodes(report: RunReport) -> list[str]:
    lat_c = report.latency.compressed
    slowest = lat_c.settings.get("slowest_nodes") if lat_c else None
    if not slowest:
        return []
    lines = ["", "Slowest nodes of the compressed model (onnxruntime profile, mean of 10 runs):", "",
             "| node | op | ms | share |", "|---|---|---:|---:|"]
    return lines + [f"| {md_text(n['node'])} | {md_text(n['op'])} | {n['mean_ms']:.3f} | {100 * n['share']:.1f}% |"
                    for n in slowest]


def _details(report: RunReport) -> list[str]:
    """ONNX export, dropped blocks, slowest nodes, fixed layers, notes and stage timings."""
    lines = []
    onnx = report.onnx
    if onnx is not None:
        diff = f"{onnx.max_abs_diff:.2e}" if onnx.max_abs_diff is not None else "-"
        lines += ["", f"ONNX: {md_text(onnx.path)}, opset {md_text(onnx.opset)}, checker {md_text(onnx.checker)}, "
                      f"max |onnxruntime - PyTorch| = {diff}."]
    dropped = report.architecture.dropped_blocks if report.architecture else []
    lines += ["", f"Dropped blocks: {md_text(', '.join(dropped) or 'none')}."]
    lines += _slowest_nodes(report)
    if report.fixed_layers:
        lines += ["", "Layers left fixed:"]
        lines += [f"- {md_text(', '.join(e.layers[:6]))}{' ...' if len(e.layers) > 6 else ''}: "
                  f"{md_text(e.reason)}" for e in report.fixed_layers]
    for note in report.notes:
        lines += ["", f"Note: {md_text(note)}."]
    lines += ["", "| stage | seconds |", "|---|---:|"]
    return lines + [f"| {md_text(k)} | {v:.1f} |" for k, v in report.timings_s.items()]


def markdown(report: RunReport) -> str:
    """Render a run report as Markdown; text from the report is escaped (:func:`md_text`)."""
    lines = [f"# Compression report: {md_text(report.model)}", "", *_facts(report), "", *_table(report),
             *_details(report)]
    return "\n".join(lines) + "\n"


def summary_line(report: RunReport) -> str:
    """The one line ``compress`` prints at the end of a run: costs, accuracy and p50 before and after."""
    b, c = report.baseline, report.compressed
    lat_b, lat_c = report.latency.baseline, report.latency.compressed
    latency = (f"p50 {lat_b.p50:.2f} ms -> {lat_c.p50:.2f} ms" if lat_b and lat_c
               else "latency to be measured on the target (see report.md)")
    return (f"{report.model}: MACs {format_count(b.macs)} -> {format_count(c.macs)}, "
            f"params {format_count(b.params)} -> {format_count(c.params)}, "
            f"accuracy {100 * b.accuracy:.1f}% -> {100 * c.accuracy:.1f}%{_accuracy_where(report)}, {latency}; "
            f"written to {report.out}")


def _accuracy_where(report: RunReport) -> str:
    """Where the accuracy was measured, when the report says (version 3 on)."""
    res = report.resolution
    if res is None:
        return ""
    if report.exported_accuracy is not None:
        return f" (exported ONNX at {'x'.join(map(str, res.deployment))}, {report.exported_accuracy.images} images)"
    return f" (at the {res.evaluation}x{res.evaluation} proxy, not the deployment shape: see the report's notes)"


def summary_line_nas(report: RunReport) -> str:
    """The one line ``compress nas`` prints: the cell's edges, costs, accuracy and p50."""
    c, lat_c = report.compressed, report.latency.compressed
    edges = len(report.architecture.cell_edges or []) if report.architecture else 0
    latency = f"p50 {lat_c.p50:.2f} ms" if lat_c else "latency to be measured on the target (see report.md)"
    return (f"{report.model}: {edges} cell edges, MACs {format_count(c.macs)}, params {format_count(c.params)}, "
            f"accuracy {100 * c.accuracy:.1f}%, {latency}; written to {report.out}")


def write_reports(out: Path, report: RunReport | dict) -> RunReport:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``out`` (each atomically) and return
    the report. A dict (report.json's content) is read with :meth:`RunReport.from_dict` first."""
    if isinstance(report, dict):
        report = RunReport.from_dict(report, str(Path(out) / "report.json"))
    write_json(Path(out) / "report.json", report.to_dict())
    write_text(Path(out) / "report.md", markdown(report))
    write_html(Path(out), report)
    return report

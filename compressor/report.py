"""Run reports: ``report.json`` (all figures), ``report.md`` (the table a person reads) and
``report.html`` (the same with plots, see ``compressor.report_html``)."""
from __future__ import annotations

from pathlib import Path

from .fileio import write_json, write_text
from .report_html import format_budget, write_html
from .units import format_count

# Markdown text from a file stays text: no raw HTML, links, code spans or extra table cells.
_MD_ESCAPES = str.maketrans({"\\": "\\\\", "`": "\\`", "|": "\\|", "[": "\\[", "]": "\\]",
                             "&": "&amp;", "<": "&lt;", ">": "&gt;"})


def md_text(value) -> str:
    """``str(value)`` as inert Markdown on one line (HTML characters as entities, Markdown ones escaped)."""
    return " ".join(str(value).translate(_MD_ESCAPES).splitlines())


def _pct(new: float, old: float) -> str:
    return f"{100 * new / old:.1f}%" if old else "-"


def _latency_rows(report: dict) -> list[str]:
    """Latency rows when it was not measured here: the prediction, said to be one."""
    pred = report.get("predicted_latency_ms") or {}
    if not pred:
        return ["| latency | not measured here (see the note) | | |"]
    b, c = pred.get("baseline"), pred.get("compressed")
    return [f"| latency, predicted by the table (ms) | {b:.3f} | {c:.3f} | {_pct(c, b)} |"]


def _table(report: dict) -> list[str]:
    b, c = report["baseline"], report["compressed"]
    lat_b, lat_c = report["latency"].get("baseline"), report["latency"].get("compressed")
    if b is None:
        rows = ["| | model |", "|---|---:|",
                f"| MACs | {format_count(c['macs'])} |", f"| params | {format_count(c['params'])} |",
                f"| val accuracy | {100 * c['accuracy']:.2f}% |"]
        rows += [f"| latency {k} (ms) | {lat_c[k]:.3f} |" for k in ("p50", "p90", "p99")]
        return rows + [f"| throughput (inf/s) | {lat_c['throughput']:.1f} |"]
    rows = [
        "| | baseline | compressed | ratio |",
        "|---|---:|---:|---:|",
        f"| MACs | {format_count(b['macs'])} | {format_count(c['macs'])} | {_pct(c['macs'], b['macs'])} |",
        f"| params | {format_count(b['params'])} | {format_count(c['params'])} | {_pct(c['params'], b['params'])} |",
        f"| val accuracy | {100 * b['accuracy']:.2f}% | {100 * c['accuracy']:.2f}% | |",
    ]
    if lat_c is None or lat_b is None:
        return rows + _latency_rows(report)
    rows += [f"| latency {k} (ms) | {lat_b[k]:.3f} | {lat_c[k]:.3f} | {_pct(lat_c[k], lat_b[k])} |"
             for k in ("p50", "p90", "p99")]
    return rows + [f"| throughput (inf/s) | {lat_b['throughput']:.1f} | {lat_c['throughput']:.1f} | |"]


def _facts(report: dict) -> list[str]:
    """The bullet list under the title: target, method, costs' input, data, latency settings."""
    lat_c = report["latency"].get("compressed")
    target, data = report["target"], report["data"]
    shape = "x".join(map(str, report["input_shape"]))
    res = report["train_resolution"]
    lines = [
        f"- Target: {md_text(target['name'])} ({md_text(target['description'])})",
        f"- Method: {md_text(report['method'])}, budget: {format_budget(report['budget'])}",
        f"- Costs at the deployment input {md_text(shape)}; trained and evaluated at {res}x{res} on "
        f"{md_text(data['source'])} ({data['train']} train / {data['val']} val images)",
    ]
    if not lat_c:
        return lines + ["- Latency: not measured on this machine (see the note)"]
    return lines + [f"- Latency: {md_text(lat_c['runtime'])} on {md_text(lat_c['device'])}, batch {lat_c['batch']}, "
                    f"{lat_c['warmup']} warm-up + {lat_c['runs']} timed runs, threads {lat_c['threads'] or 'default'}"]


def _details(report: dict) -> list[str]:
    """ONNX export, dropped blocks, slowest nodes, fixed layers, notes and stage timings."""
    onnx = report["onnx"]
    lines = [
        "",
        f"ONNX: {md_text(onnx['path'])}, opset {md_text(onnx['opset'])}, checker {md_text(onnx['checker'])}, "
        f"max |onnxruntime - PyTorch| = {onnx['max_abs_diff']:.2e}.",
        "",
        f"Dropped blocks: {md_text(', '.join(report['architecture']['dropped_blocks']) or 'none')}.",
    ]
    slowest = (report["latency"].get("compressed") or {}).get("settings", {}).get("slowest_nodes")
    if slowest:
        lines += ["", "Slowest nodes of the compressed model (onnxruntime profile, mean of 10 runs):", "",
                  "| node | op | ms | share |", "|---|---|---:|---:|"]
        lines += [f"| {md_text(n['node'])} | {md_text(n['op'])} | {n['mean_ms']:.3f} | {100 * n['share']:.1f}% |"
                  for n in slowest]
    if report["fixed_layers"]:
        lines += ["", "Layers left fixed:"]
        lines += [f"- {md_text(', '.join(e['layers'][:6]))}{' ...' if len(e['layers']) > 6 else ''}: "
                  f"{md_text(e['reason'])}" for e in report["fixed_layers"]]
    for note in report.get("notes", []):
        lines += ["", f"Note: {md_text(note)}."]
    lines += ["", "| stage | seconds |", "|---|---:|"]
    return lines + [f"| {md_text(k)} | {v:.1f} |" for k, v in report["timings_s"].items()]


def markdown(report: dict) -> str:
    """Render a run report as Markdown; text from the report is escaped (:func:`md_text`)."""
    lines = [f"# Compression report: {md_text(report['model'])}", "", *_facts(report), "", *_table(report),
             *_details(report)]
    return "\n".join(lines) + "\n"


def write_reports(out: Path, report: dict) -> None:
    """Write ``report.json`` and ``report.md`` into ``out`` (atomically)."""
    write_json(Path(out) / "report.json", report)
    write_text(Path(out) / "report.md", markdown(report))
    write_html(Path(out), report)

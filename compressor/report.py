"""Run reports: ``report.json`` (all figures and the warnings), ``report.md`` (the tables a person
reads), ``report.html`` (the same with plots, see ``compressor.report_html``) and the CLI's last
lines, all from a :class:`~compressor.run_report.RunReport`."""
from __future__ import annotations

from pathlib import Path

from compress_base.fileio import write_json, write_text

from .report_content import epoch_rows, precision_items, reproduce_lead, sensitive_rows, slowest_rows, width_rows
from .report_html import format_budget
from .report_page import write_html
from .report_summary import summary_rows, summary_text
from .report_warnings import warnings_of
from .run_report import RunReport

# Markdown text from a file stays text: no raw HTML, links, code spans or extra table cells.
_MD_ESCAPES = str.maketrans({"\\": "\\\\", "`": "\\`", "|": "\\|", "[": "\\[", "]": "\\]",
                             "&": "&amp;", "<": "&lt;", ">": "&gt;"})


def md_text(value) -> str:
    """``str(value)`` as inert Markdown on one line (HTML characters as entities, Markdown ones escaped)."""
    return " ".join(str(value).translate(_MD_ESCAPES).splitlines())


def md_table(header: list, rows: list[list]) -> list[str]:
    """A Markdown table; cells escaped, columns after the first right-aligned."""
    lines = ["| " + " | ".join(md_text(h) for h in header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return lines + ["| " + " | ".join(md_text(c) for c in row) + " |" for row in rows]


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
        return lines + ["- Latency: not measured on this machine (see the warnings)"]
    rounds = f" in {len(lat_c.rounds)} interleaved rounds" if lat_c.rounds else ""
    return lines + [f"- Latency: {md_text(lat_c.runtime)} on {md_text(lat_c.device)}, batch {lat_c.batch}, "
                    f"{lat_c.runs} timed runs{rounds} ({lat_c.warmup} warm-up each), "
                    f"threads {lat_c.threads or 'default'}; p50 is the median of the rounds' medians, "
                    "the range their lowest and highest"]


def _section(title: str, header: list, rows: list, intro: str = "") -> list[str]:
    if not rows:
        return []
    return ["", f"## {title}", *(["", intro] if intro else []), "", *md_table(header, rows)]


def _warnings(report: RunReport) -> list[str]:
    found = warnings_of(report)
    return ["", "## Warnings", "", *([f"- **{md_text(w.kind)}**: {md_text(w.message)}" for w in found]
                                      or ["None: no check found a problem (see the README for what is checked)."])]


def _training(report: RunReport) -> list[str]:
    lines = []
    for name, records in (report.training or {}).items():
        lines += _section(f"Training: {name}", *epoch_rows(records))
    return lines


def _details(report: RunReport) -> list[str]:
    """ONNX export, dropped blocks, fixed layers, notes, reproduce and stage timings."""
    lines = []
    onnx = report.onnx
    if onnx is not None:
        diff = f"{onnx.max_abs_diff:.2e}" if onnx.max_abs_diff is not None else "-"
        lines += ["", f"ONNX: {md_text(onnx.path)}, opset {md_text(onnx.opset)}, checker {md_text(onnx.checker)}, "
                      f"max |onnxruntime - PyTorch| = {diff}."]
    dropped = report.architecture.dropped_blocks if report.architecture else []
    lines += ["", f"Dropped blocks: {md_text(', '.join(dropped) or 'none')}."]
    if report.fixed_layers:
        lines += ["", "Layers left fixed:"]
        lines += [f"- {md_text(', '.join(e.layers[:6]))}{' ...' if len(e.layers) > 6 else ''}: "
                  f"{md_text(e.reason)}" for e in report.fixed_layers]
    for note in report.notes:
        lines += ["", f"Note: {md_text(note)}."]
    if report.reproduce is not None:
        versions = ", ".join(f"{k} {v}" for k, v in report.reproduce.versions.items())
        rep = report.reproduce
        lines += ["", "## Reproduce", "", md_text(reproduce_lead(report)), "",
                  "```", rep.command.replace("```", "` ` `"), "```"]
        if rep.process and rep.process != rep.command:
            lines += ["", f"The process that wrote it ran: {md_text(rep.process)}"]
        lines += ["", f"Versions: {md_text(versions)}."]
    return lines + _section("Stage timings", ["stage", "seconds"],
                            [[k, f"{v:.1f}"] for k, v in report.timings_s.items()])


def markdown(report: RunReport) -> str:
    """Render a run report as Markdown; text from the report is escaped (:func:`md_text`)."""
    lines = [f"# Compression report: {md_text(report.model)}", "", *_facts(report), *_warnings(report),
             "", "## Summary", "", *md_table(*summary_rows(report))]
    if report.precision is not None:
        lines += ["", "## Precision", "", *md_table(["", ""], [list(i) for i in precision_items(report)])]
        lines += _section("Layers most sensitive to the precision", *sensitive_rows(report))
    lines += _training(report)
    lines += _section("Kept channels per layer group (model order)", *width_rows(report))
    lines += _section("Slowest nodes of the compressed model", *slowest_rows(report),
                      intro="onnxruntime's node profile, mean of 10 runs.")
    return "\n".join(lines + _details(report)) + "\n"


def summary_line(report: RunReport) -> str:
    """The lines ``compress`` prints at the end of a run (:func:`compressor.report_summary.summary_text`):
    the summary table, the warnings and where the run was written."""
    return summary_text(report)


def summary_line_nas(report: RunReport) -> str:
    """The lines ``compress nas`` prints: the cell's edges, then the same table and warnings as a run's."""
    edges = len(report.architecture.cell_edges or []) if report.architecture else 0
    return f"{edges} cell edges\n" + summary_text(report)


def write_reports(out: Path, report: RunReport | dict, history: list | None = None) -> RunReport:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``out`` (each atomically) and return
    the report. A dict (report.json's content) is read with :meth:`RunReport.from_dict` first.
    ``history`` is the search's trace (search.json's) for report.html's plots."""
    if isinstance(report, dict):
        report = RunReport.from_dict(report, str(Path(out) / "report.json"))
    write_json(Path(out) / "report.json", report.to_dict())
    write_text(Path(out) / "report.md", markdown(report))
    write_html(Path(out), report, history=history)
    return report

"""``compress report``'s pages: the merged data of :func:`compressor.merge.merge_reports` as
Markdown (a run x device table, each run's warnings, the devices, the bench files) and as one
self-contained HTML page with plots. A run's own latency and its accuracies carry the uncertainty its
single-run report shows; bench rows show the bench's figures. Text from the input files is escaped in
both."""
from __future__ import annotations

from exporters.stats import LatencyStats

from .report import md_text
from .report_html import CSS, Plots, architecture_section, esc, kv_table, page, profile_items, table
from .report_plots import latency_figure, scatter_figure
from .report_sections import WARNINGS_CSS
from .report_uncertainty import accuracy_text, latency_text, percentile_text, speedup, speedup_text
from .run_report import ArchitectureInfo, Target
from .units import format_count

RUN_SOURCE = "compress run"  # a row measured by the run itself (bench rows: "compress bench")
READING = ("Latency is the median (p50) of timed runs after a warm-up; speed-up = original p50 / compressed p50. "
           "Where a run measured its models in interleaved rounds, its p50 shows the range of the rounds' p50s "
           "and its speed-up the range of the per-round ratios, each to the digits that range supports; rows "
           "measured by compress bench show the bench's p50 to the digits its runs support (1.25 std / sqrt(runs); "
           "three decimals without them) and the ratio of the p50s. A p90 or p99 has the digits of its p50. "
           "Accuracy is shown with its standard error in points and the number of validation images (n) where the "
           "run recorded it.")


def _ms(short, key="p50") -> str:
    """A measurement's p50, p90 or p99 as the single-run report shows it (:func:`percentile_text`)."""
    return percentile_text(_stats(short), key) if short else "-"


def _speedup(row) -> str:
    o, c = row.get("original"), row.get("compressed")
    return f"{o['p50'] / c['p50']:.2f}x" if o and c and c["p50"] > 0 else "-"


# what a bench file may leave out (it needs only p50, p90 and p99): no runs, so no known uncertainty
_UNKNOWN = {"mean": 0.0, "std": 0.0, "throughput": 0.0, "warmup": 0, "runs": 0, "batch": 1, "runtime": "?",
            "device": "?"}


def _stats(short: dict) -> LatencyStats:
    """A measurement (merged.json's figures of it) as :class:`LatencyStats`."""
    return LatencyStats(**{**_UNKNOWN, **short, "input_shape": tuple(short.get("input_shape") or ())})


def _latency_cells(row: dict) -> list[str]:
    """Original p50, compressed p50 and speed-up of a latency row: a run's own measurement with the
    uncertainty its single-run report shows (:mod:`compressor.report_uncertainty`), a bench's p50s to
    the digits their runs support and their ratio."""
    if row.get("source") != RUN_SOURCE:
        return [_ms(row["original"]), _ms(row["compressed"]), _speedup(row)]
    o, c = (_stats(row[k]) if row[k] else None for k in ("original", "compressed"))
    s = speedup(o, c)
    return [latency_text(o, unit="") if o else "-", latency_text(c, unit="") if c else "-",
            speedup_text(s) if s else "-"]


def _acc(costs, n: int | None = None) -> str:
    """An accuracy with its standard error and ``n`` where the run recorded ``n``."""
    if not costs:
        return "-"
    return accuracy_text(costs["accuracy"], n) if n else f"{100 * costs['accuracy']:.2f}%"


def _macs(costs) -> str:
    return format_count(costs["macs"]) if costs else "-"


MAIN_HEADER = ["run", "model", "method", "device", "original p50 (ms)", "compressed p50 (ms)", "speed-up",
               "original accuracy", "compressed accuracy", "original MACs", "compressed MACs"]


def main_rows(merged: dict) -> list[list[str]]:
    """One row per run and device: p50 original vs compressed, speed-up, accuracy, MACs."""
    rows = []
    for run in merged["runs"]:
        n = run.get("validation_images")
        for lat in run["latency"] or [{"device": "-", "original": None, "compressed": None}]:
            rows.append([run["name"], run["model"], run["method"], lat["device"], *_latency_cells(lat),
                         _acc(run["baseline"], n), _acc(run["compressed"], n),
                         _macs(run["baseline"]), _macs(run["compressed"])])
    return rows


def _warned(merged: dict) -> list[tuple[str, dict]]:
    """Every run's warnings as ``(run name, warning)``, in run order."""
    return [(run["name"], w) for run in merged["runs"] for w in run.get("warnings", [])]


def _device_facts(dev: dict) -> list[str]:
    facts = [f"profile {dev['profile']}", f"runtime {dev['runtime']}", f"measured by {dev['source']}"]
    host = dev.get("host") or {}
    for key, label in (("board", "board"), ("l4t", "L4T"), ("cpu_governor", "CPU governor"),
                       ("cpu_max_mhz", "CPU max MHz"), ("throttled", "throttled"), ("hostname", "host")):
        if host.get(key) is not None:
            facts.append(f"{label} {host[key]}")
    mode = host.get("nvpmodel")
    if isinstance(mode, dict) and mode.get("name"):
        facts.append(f"power mode {mode['name']}" + (f" (id {mode['id']})" if mode.get("id") is not None else ""))
    return facts


def merged_markdown(merged: dict) -> str:
    """The merged report as Markdown: the run x device table, then the devices and bench files; text
    from the input files is escaped (:func:`compressor.report.md_text`)."""
    lines = [f"# Compression runs ({len(merged['runs'])})", "",
             "| " + " | ".join(MAIN_HEADER) + " |", "|---|---|---|---|" + "---:|" * (len(MAIN_HEADER) - 4)]
    lines += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in main_rows(merged)]
    lines += ["", READING]
    warned = _warned(merged)
    lines += ["", f"## Warnings ({len(warned)})" if warned else "## Warnings", ""]
    lines += [f"- {md_text(name)}: **{md_text(w['kind'])}**: {md_text(w['message'])}" for name, w in warned] or \
        ["None: no check found a problem in any run (see the README for what is checked)."]
    if merged["devices"]:
        lines += ["", "## Devices", ""]
        for dev in merged["devices"]:
            lines.append(f"- {md_text(dev['label'])}: {md_text(', '.join(_device_facts(dev)))}")
            for k, v in dev["notes"].items():
                lines.append(f"  - {md_text(k.replace('_', ' '))}: {md_text(v)}")
    if merged["benches"]:
        lines += ["", "## Bench files", ""]
        for b in merged["benches"]:
            where = ", ".join(f"{m['run']}/{m['file']} ({m['role']})" for m in b["matched"]) or "no run (left out)"
            lines.append(f"- {md_text(b['path'])}: {md_text(b['file'])} (sha256 {b['sha256'][:12]}...) -> "
                         f"{md_text(where)}")
    return "\n".join(lines) + "\n"


def _percentiles_table(runs: list[dict]) -> list[str]:
    detail = [[run["name"], lat["device"], *[_ms(lat["original"], k) for k in ("p50", "p90", "p99")],
               *[_ms(lat["compressed"], k) for k in ("p50", "p90", "p99")]] for run in runs for lat in run["latency"]]
    return ["<h2>Latency percentiles (ms)</h2>",
            table(["run", "device", "original p50", "original p90", "original p99", "compressed p50",
                   "compressed p90", "compressed p99"], detail, numeric_from=2)]


def _plots(merged: dict, plots: Plots) -> list[str]:
    """Latency per device, and accuracy against latency, one colour per device."""
    if not plots.enabled:
        return [plots.missing()]
    runs, labels = merged["runs"], [dev["label"] for dev in merged["devices"]]
    panels = [(label, [(run["name"], lat["original"], lat["compressed"]) for run in runs for lat in run["latency"]
                       if lat["device"] == label]) for label in labels]
    series = []
    for label in labels:
        points = []
        for run in runs:
            for lat in (lat for lat in run["latency"] if lat["device"] == label):
                base = lat["original"] and run["baseline"]
                o = (lat["original"]["p50"], run["baseline"]["accuracy"]) if base else None
                c = (lat["compressed"]["p50"], run["compressed"]["accuracy"]) if lat["compressed"] else None
                points.append({"run": run["name"], "original": o, "compressed": c})
        series.append({"device": label, "points": points})
    return ["<h2>Latency per device</h2>",
            plots.img(lambda: latency_figure(panels), "latency", "latency p50 per device, original vs compressed"),
            "<h2>Accuracy vs latency</h2>",
            plots.img(lambda: scatter_figure(series), "accuracy_latency", "accuracy against latency p50")]


def _runs_section(runs: list[dict], plots: Plots) -> list[str]:
    parts = ["<h2>Runs</h2>"]
    for i, run in enumerate(runs):
        b, c = run["baseline"], run["compressed"]
        facts = [("directory", run["dir"]), ("model", run["model"]), ("method", run["method"]),
                 ("target", run["target"])]
        if run.get("input_shape"):
            facts.append(("input shape", "x".join(map(str, run["input_shape"]))))
        params_b = format_count(b["params"]) if b else "-"
        n = run.get("validation_images")
        facts += [("MACs", f"{_macs(b)} -> {_macs(c)}"), ("params", f"{params_b} -> {format_count(c['params'])}"),
                  ("val accuracy", f"{_acc(b, n)} -> {_acc(c, n)}")]
        parts += [f"<h3>{esc(run['name'])}</h3>", kv_table(facts)]
        if run["architecture"]:
            parts.append(architecture_section(ArchitectureInfo(**run["architecture"]), plots, name=f"widths_{i}",
                                              title=run["name"]))
    return parts


def _devices_section(merged: dict) -> list[str]:
    if not merged["devices"]:
        return []
    parts = ["<h2>Devices</h2>"]
    for dev in merged["devices"]:
        items = [("measured by", dev["source"]), ("device", dev["device"]), ("runtime", dev["runtime"])]
        items += profile_items(Target(name=dev["profile"], description=dev.get("description"), notes=dev["notes"]))
        items += [(f"host {k}", v if not isinstance(v, dict) else ", ".join(f"{a} {b}" for a, b in v.items()))
                  for k, v in (dev.get("host") or {}).items()]
        if dev["files"]:
            items.append(("bench files", ", ".join(dev["files"])))
        parts.append(f"<h3>{esc(dev['label'])}</h3>" + kv_table(items))
    return parts


def _warnings_section(merged: dict) -> list[str]:
    """Each run's warnings (as its own report lists them), or a line saying there are none."""
    warned = _warned(merged)
    if not warned:
        return ['<h2 id="warnings">Warnings</h2><div class="clean">No warnings: every check passed in every run.</div>']
    items = "".join(f'<li><b>{esc(name)}</b>: <span class="kind">{esc(w["kind"])}</span>: {esc(w["message"])}</li>'
                    for name, w in warned)
    return [f'<h2 id="warnings">Warnings ({len(warned)})</h2><ul class="warnings">{items}</ul>']


def merged_html(merged: dict, plots_dir=None) -> str:
    """The merged report as a self-contained HTML page with plots (see :func:`merge_reports`)."""
    plots = Plots(plots_dir)
    runs = merged["runs"]
    parts = [f"<h1>Compression runs ({len(runs)})</h1>", f"<p>{esc(READING)}</p>",
             table(MAIN_HEADER, main_rows(merged), numeric_from=4), *_warnings_section(merged),
             *_percentiles_table(runs), *_plots(merged, plots), *_runs_section(runs, plots),
             *_devices_section(merged)]
    if merged["unmatched"]:
        parts.append("<h2>Bench files left out</h2><p>These match no model file of the given runs (by SHA-256):</p><ul>"
                     + "".join(f"<li><code>{esc(p)}</code></li>" for p in merged["unmatched"]) + "</ul>")
    return page(f"Compression runs ({len(runs)})", "\n".join(parts), css=CSS + WARNINGS_CSS)

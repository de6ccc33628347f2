"""``compress report DIR... [--out DIR]``: one report over several runs and device measurements.

Each input is a run directory (with ``report.json``; a path to a ``report.json`` works too) or a
bench JSON written by ``compress bench`` on some device. Bench results are matched to runs by the
SHA-256 of the timed model file: a run's ``model.onnx`` / ``model.engine`` (and any other
``.onnx``/``.engine``/``.plan``/``.trt`` file in the run directory) are its compressed model,
files whose name starts with ``baseline`` its original. A match adds a latency row for that device
to the run; bench files of the original and of the compressed model measured on the same device
(same profile, device, runtime and host) share one row. ``*.bench.json`` files inside a run
directory (``compress bench``'s default output name) are picked up without being named.

A bench JSON that matches no run is left out with a warning; paths that do not exist, and files
that are neither a run report nor a bench JSON, are :class:`CompressError` s.

:func:`merge_reports` returns plain data; :func:`write_merged` writes ``report.md``,
``report.html`` (self-contained, plots embedded) and ``merged.json`` atomically.
"""
from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

from .errors import CompressError
from .fileio import cannot_write, write_json, write_text
from .report import md_text
from .report_html import (
    Plots,
    architecture_section,
    esc,
    latency_figure,
    page,
    profile_items,
    scatter_figure,
    table,
)
from .units import format_count

log = logging.getLogger(__name__)

MERGED_FORMAT = 1
REPORT_JSON = "report.json"
MERGED_JSON = "merged.json"
MODEL_SUFFIXES = (".onnx", ".engine", ".plan", ".trt")
_HINT = "give run directories written by `compress` or JSON files written by `compress bench`"


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompressError(f"{path} is not valid JSON ({str(exc).splitlines()[0][:120]}); {_HINT}") from None
    except OSError as exc:
        raise CompressError(f"cannot read {path}: {exc.strerror or exc}") from None


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_amount(v) -> bool:
    return _num(v) and math.isfinite(v) and v >= 0


# What a field read from a file must be: a test, and the words for the error message.
_KINDS = {
    "object": (lambda v: isinstance(v, dict), "an object"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "texts": (lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v), "a list of strings"),
    "amount": (_is_amount, "a non-negative number"),
    "fraction": (lambda v: _is_amount(v) and v <= 1, "a number between 0 and 1"),
    "count": (_is_count, "a non-negative integer"),
    "counts": (lambda v: isinstance(v, dict) and all(map(_is_count, v.values())),
               "an object of non-negative integers"),
    "shape": (lambda v: isinstance(v, list) and bool(v) and all(_is_count(d) and d > 0 for d in v),
              "a list of positive integers"),
    "sha256": (lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None, "64 hex digits"),
}
_STATS_FIELDS = {"p50": "amount", "p90": "amount", "p99": "amount", "mean": "amount", "std": "amount",
                 "throughput": "amount", "warmup": "count", "runs": "count", "batch": "count", "threads": "count",
                 "input_shape": "shape", "runtime": "text", "device": "text", "versions": "object",
                 "settings": "object"}
_RUN_FIELDS = {
    "method": "text", "target": "object", "target.name": "text", "target.description": "text",
    "target.notes": "object", "input_shape": "shape", "notes": "texts",
    **{f"{part}.{key}": kind for part in ("baseline", "compressed")
       for key, kind in (("macs", "amount"), ("params", "amount"), ("accuracy", "fraction"))},
    "latency.baseline": "object", "latency.compressed": "object",
    **{f"latency.{part}.{key}": kind for part in ("baseline", "compressed") for key, kind in _STATS_FIELDS.items()},
    "architecture": "object", "architecture.widths": "counts", "architecture.full_widths": "counts",
    "architecture.blocks": "object", "architecture.dropped_blocks": "texts",
}
_BENCH_FIELDS = {
    "created": "text", "runtime": "text", "model.sha256": "sha256", "model.file": "text",
    "profile.name": "text", "profile.description": "text", "profile.notes": "object",
    "host": "object", "host.hostname": "text", "host.nvpmodel": "object", "host.nvpmodel.name": "text",
    **{f"stats.{key}": kind for key, kind in _STATS_FIELDS.items()},
}


def _brief(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _non_finite(value, field: str = ""):
    """``(field, value)`` of the first NaN or infinite number in a JSON value, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return field, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{field}.{key}" if field else str(key))
        if found:
            return found
    return None


def _check_fields(obj: dict, fields: dict, where: str, remedy: str) -> None:
    """Refuse NaN/Infinity anywhere in ``obj`` and a present field of ``fields`` (dotted name ->
    kind of :data:`_KINDS`) of the wrong kind: one line naming the file, the field and its kind."""
    bad = _non_finite(obj)
    if bad:
        raise CompressError(f"{where}: field '{bad[0]}' must be a finite number, got {_brief(bad[1])}; {remedy}")
    for field, kind in fields.items():
        value = obj
        for key in field.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        test, words = _KINDS[kind]
        if value is not None and not test(value):
            raise CompressError(f"{where}: field '{field}' must be {words}, got {_brief(value)}; {remedy}")


def _check_stats(stats, where: str) -> None:
    if not isinstance(stats, dict) or not all(_num(stats.get(k)) for k in ("p50", "p90", "p99")):
        raise CompressError(f"{where} has no latency p50/p90/p99 figures; {_HINT}")


def _is_run_report(obj) -> bool:
    return isinstance(obj, dict) and "compressed" in obj and "latency" in obj


def _is_bench(obj) -> bool:
    return isinstance(obj, dict) and "stats" in obj and isinstance(obj.get("model"), dict)


def _check_run(report: dict, where: str) -> None:
    if not isinstance(report.get("model"), str):
        raise CompressError(f"{where} is not a compress run report (no model name); {_HINT}")
    for part in ("compressed", "baseline"):
        costs = report.get(part)
        if part == "baseline" and costs is None:
            continue
        if not isinstance(costs, dict) or not all(_num(costs.get(k)) for k in ("macs", "params", "accuracy")):
            raise CompressError(f"{where} is not a compress run report ({part} has no macs/params/accuracy); {_HINT}")
    lat = report.get("latency")
    if not isinstance(lat, dict):
        raise CompressError(f"{where} is not a compress run report (no latency); {_HINT}")
    if lat.get("compressed") is not None:  # None: measured only on the device (compress bench)
        _check_stats(lat["compressed"], f"{where} (compressed latency)")
    if lat.get("baseline") is not None:
        _check_stats(lat["baseline"], f"{where} (baseline latency)")
    _check_fields(report, _RUN_FIELDS, where, "fix the file or run `compress` again")


def _check_bench(obj: dict, where: str) -> None:
    model = obj["model"]
    if not isinstance(model.get("sha256"), str) or not model["sha256"]:
        raise CompressError(f"{where} is a bench JSON without the model file's sha256; re-run `compress bench`")
    _check_stats(obj["stats"], where)
    if not isinstance(obj.get("profile"), dict) or not obj["profile"].get("name"):
        raise CompressError(f"{where} is a bench JSON without a profile name; re-run `compress bench`")
    _check_fields(obj, _BENCH_FIELDS, where, "fix the file or run `compress bench` again")


def _classify(path: Path) -> tuple[str, dict, Path]:
    """``("run", report, run_dir)`` or ``("bench", result, file)``."""
    if not path.exists():
        raise CompressError(f"{path} does not exist; {_HINT}")
    if path.is_dir():
        rj = path / REPORT_JSON
        if not rj.is_file():
            if (path / MERGED_JSON).is_file():
                raise CompressError(f"{path} holds a merged report, not a run; give the run directories it was made from")
            raise CompressError(f"{path} is not a run directory (it has no {REPORT_JSON}); {_HINT}")
        report = _load_json(rj)
        if not _is_run_report(report):
            raise CompressError(f"{rj} is not a compress run report; {_HINT}")
        _check_run(report, str(rj))
        return "run", report, path
    if path.suffix.lower() != ".json":
        raise CompressError(f"{path} is neither a run directory nor a bench JSON file; {_HINT}")
    obj = _load_json(path)
    if _is_run_report(obj):
        _check_run(obj, str(path))
        return "run", obj, path.parent
    if _is_bench(obj):
        _check_bench(obj, str(path))
        return "bench", obj, path
    raise CompressError(f"{path} is neither a run report nor a bench JSON; {_HINT}")


def _sha256(path: Path, cache: dict) -> str:
    from exporters.bench import file_sha256

    key = path.resolve()
    if key not in cache:
        cache[key] = file_sha256(path)
    return cache[key]


def _role(path: Path) -> str:
    return "original" if path.name.lower().startswith("baseline") else "compressed"


# --------------------------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------------------------


def _short(stats: dict) -> dict:
    keep = ("p50", "p90", "p99", "mean", "std", "throughput", "batch", "input_shape", "runs", "warmup",
            "runtime", "device", "versions", "threads")
    return {k: stats[k] for k in keep if k in stats}


def _run_names(dirs: list[Path]) -> list[str]:
    """Run directory names, with the parent folder where two runs share a name."""
    short = [d.resolve().name or str(d) for d in dirs]
    names = ["/".join(d.resolve().parts[-2:]) if short.count(n) > 1 else n for d, n in zip(dirs, short)]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def merge_reports(paths) -> dict:
    """Merge run directories and bench JSON files (see the module docstring) into plain data.

    Returns ``{"format", "runs": [{name, dir, model, method, target, baseline, compressed,
    architecture, latency: [{device, ...}]}], "devices": [{label, source, profile, runtime, device,
    host, notes, files}], "benches": [{path, file, sha256, matched}], "unmatched": [paths]}``.
    """
    paths = [Path(p) for p in (paths or [])]
    if not paths:
        raise CompressError(f"nothing to report: {_HINT}")
    runs, benches, seen = [], [], set()
    for p in paths:
        kind, obj, where = _classify(p)
        key = (kind, where.resolve())
        if key in seen:
            log.warning("%s is given twice; using it once", p)
            continue
        seen.add(key)
        if kind == "run":
            runs.append((where, obj))
        else:
            benches.append((where, obj))
    if not runs:
        raise CompressError(f"no run directories among the inputs, only bench JSON files; {_HINT}")
    for run_dir, _ in runs:  # compress bench's default output sits beside the model
        for found in sorted(run_dir.glob("*.bench.json")):
            key = ("bench", found.resolve())
            if key in seen:
                continue
            try:
                kind, obj, where = _classify(found)
            except CompressError as exc:
                log.warning("skipping %s: %s", found, exc)
                continue
            if kind == "bench":
                seen.add(key)
                benches.append((where, obj))

    # model files of each run, by hash (hashed only when there are bench results to match)
    cache: dict = {}
    by_sha: dict[str, list[tuple[int, str, str]]] = {}
    if benches:
        for i, (run_dir, _) in enumerate(runs):
            for f in sorted(run_dir.iterdir()):
                if f.is_file() and f.suffix.lower() in MODEL_SUFFIXES:
                    by_sha.setdefault(_sha256(f, cache), []).append((i, _role(f), f.name))

    names = _run_names([d for d, _ in runs])
    # device rows: key -> description; per run: key -> {original, compressed, files}
    devices: dict[tuple, dict] = {}
    rows: list[dict[tuple, dict]] = [{} for _ in runs]

    for i, (run_dir, report) in enumerate(runs):
        lat = report["latency"]
        comp = lat.get("compressed")
        if comp is None:
            continue  # not measured where it ran: its device benches give its rows
        target = report.get("target") or {}
        key = ("run", target.get("name", "?"), comp.get("device", "?"), comp.get("runtime", "?"), None)
        devices.setdefault(key, {"source": "compress run", "profile": target.get("name", "?"),
                                 "runtime": comp.get("runtime", "?"), "device": comp.get("device", "?"),
                                 "host": None, "target": target, "files": []})
        rows[i][key] = {"original": _short(lat["baseline"]) if lat.get("baseline") else None,
                        "compressed": _short(comp), "files": [f"{names[i]}/{REPORT_JSON}"], "created": {}}

    bench_info, unmatched = [], []
    for path, result in benches:
        sha = result["model"]["sha256"]
        matches = by_sha.get(sha, [])
        bench_info.append({"path": str(path), "file": result["model"].get("file"), "sha256": sha,
                           "matched": [{"run": names[i], "role": role, "file": fname} for i, role, fname in matches]})
        if not matches:
            log.warning("%s: bench of %s (sha256 %s...) matches no model file in the given runs; left out",
                        path, result["model"].get("file", "?"), sha[:12])
            unmatched.append(str(path))
            continue
        stats, profile, host = result["stats"], result["profile"], result.get("host") or {}
        key = ("bench", profile["name"], stats.get("device", "?"), result.get("runtime", stats.get("runtime", "?")),
               host.get("hostname"))
        dev = devices.setdefault(key, {"source": "compress bench", "profile": profile["name"], "runtime": key[3],
                                       "device": key[2], "host": host, "target": profile, "files": []})
        dev["files"].append(str(path))
        created = str(result.get("created", ""))
        for i, role, fname in matches:
            row = rows[i].setdefault(key, {"original": None, "compressed": None, "files": [], "created": {}})
            if row[role] is not None:
                if created < row["created"].get(role, ""):
                    log.warning("%s: an older bench of %s's %s model on %s than one already given; ignored",
                                path, names[i], role, profile["name"])
                    continue
                log.warning("%s: newer bench of %s's %s model on %s replaces an earlier one",
                            path, names[i], role, profile["name"])
            run_shape = runs[i][1].get("input_shape")
            if run_shape and stats.get("input_shape") and list(stats["input_shape"]) != list(run_shape):
                log.warning("%s timed %s at %s but run %s was built for %s", path, fname,
                            "x".join(map(str, stats["input_shape"])), names[i], "x".join(map(str, run_shape)))
            row[role] = _short(stats)
            row["created"][role] = created
            row["files"].append(str(path))

    labels = _labels(devices)
    out_runs = []
    for i, (run_dir, report) in enumerate(runs):
        lat_rows = []
        for key, row in rows[i].items():
            lat_rows.append({"device": labels[key], "source": devices[key]["source"],
                             "original": row["original"], "compressed": row["compressed"], "files": row["files"]})
        costs = {k: report["compressed"][k] for k in ("macs", "params", "accuracy")}
        base = report.get("baseline")
        out_runs.append({
            "name": names[i],
            "dir": str(run_dir),
            "model": report["model"],
            "method": report.get("method", "?"),
            "target": (report.get("target") or {}).get("name", "?"),
            "input_shape": report.get("input_shape"),
            "baseline": {k: base[k] for k in ("macs", "params", "accuracy")} if base else None,
            "compressed": costs,
            "architecture": report.get("architecture") or {},
            "latency": lat_rows,
        })
    used = {k for r in rows for k in r}
    out_devices = []
    for key, dev in devices.items():
        if key not in used:
            continue
        out_devices.append({"label": labels[key], "source": dev["source"], "profile": dev["profile"],
                            "runtime": dev["runtime"], "device": dev["device"], "host": dev["host"],
                            "notes": dict((dev["target"] or {}).get("notes") or {}),
                            "description": (dev["target"] or {}).get("description"), "files": dev["files"]})
    return {"format": MERGED_FORMAT, "runs": out_runs, "devices": out_devices, "benches": bench_info,
            "unmatched": unmatched}


def _labels(devices: dict) -> dict:
    """A readable, unique label per device key: ``device (runtime, profile)``, plus the host or
    ``[compress run]`` where two keys would read the same."""
    base = {k: f"{d['device']} ({d['runtime']}, {d['profile']})" for k, d in devices.items()}
    out = {}
    for k, label in base.items():
        clash = [o for o, other in base.items() if other == label and o != k]
        if clash:
            if k[0] == "run":
                label += " [compress run]"
            else:
                label += f" @ {k[4] or 'unknown host'}"
        out[k] = label
    # identical host names on two bench keys of the same label cannot happen (host is in the key)
    return out


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _ms(stats, key="p50") -> str:
    return f"{stats[key]:.3f}" if stats else "-"


def _speedup(row) -> str:
    o, c = row.get("original"), row.get("compressed")
    return f"{o['p50'] / c['p50']:.2f}x" if o and c and c["p50"] > 0 else "-"


def _acc(costs) -> str:
    return f"{100 * costs['accuracy']:.2f}%" if costs else "-"


def _macs(costs) -> str:
    return format_count(costs["macs"]) if costs else "-"


MAIN_HEADER = ["run", "model", "method", "device", "original p50 (ms)", "compressed p50 (ms)", "speed-up",
               "original accuracy", "compressed accuracy", "original MACs", "compressed MACs"]


def main_rows(merged: dict) -> list[list[str]]:
    """One row per run and device: p50 original vs compressed, speed-up, accuracy, MACs."""
    rows = []
    for run in merged["runs"]:
        for lat in run["latency"] or [{"device": "-", "original": None, "compressed": None}]:
            rows.append([run["name"], run["model"], run["method"], lat["device"], _ms(lat["original"]),
                         _ms(lat["compressed"]), _speedup(lat), _acc(run["baseline"]), _acc(run["compressed"]),
                         _macs(run["baseline"]), _macs(run["compressed"])])
    return rows


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
    lines += ["", "Latency is the median of timed runs after a warm-up; speed-up = original p50 / compressed p50."]
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


def merged_html(merged: dict, plots_dir=None) -> str:
    """The merged report as a self-contained HTML page with plots (see :func:`merge_reports`)."""
    plots = Plots(plots_dir)
    runs = merged["runs"]
    parts = [f"<h1>Compression runs ({len(runs)})</h1>",
             ("<p>Latency is the median (p50) of timed runs after a warm-up; speed-up = original p50 / "
              "compressed p50.</p>"),
             table(MAIN_HEADER, main_rows(merged), numeric_from=4)]

    detail = []
    for run in runs:
        for lat in run["latency"]:
            detail.append([run["name"], lat["device"], *[_ms(lat["original"], k) for k in ("p50", "p90", "p99")],
                           *[_ms(lat["compressed"], k) for k in ("p50", "p90", "p99")]])
    parts += ["<h2>Latency percentiles (ms)</h2>",
              table(["run", "device", "original p50", "original p90", "original p99", "compressed p50",
                     "compressed p90", "compressed p99"], detail, numeric_from=2)]

    if plots.enabled:
        panels = []
        for dev in merged["devices"]:
            groups = [(run["name"], lat["original"], lat["compressed"]) for run in runs for lat in run["latency"]
                      if lat["device"] == dev["label"]]
            panels.append((dev["label"], groups))
        parts += ["<h2>Latency per device</h2>",
                  plots.img(lambda: latency_figure(panels), "latency", "latency p50 per device, original vs compressed")]
        series = []
        for dev in merged["devices"]:
            points = []
            for run in runs:
                for lat in run["latency"]:
                    if lat["device"] != dev["label"]:
                        continue
                    o = (lat["original"]["p50"], run["baseline"]["accuracy"]) if lat["original"] and run["baseline"] else None
                    c = (lat["compressed"]["p50"], run["compressed"]["accuracy"]) if lat["compressed"] else None
                    points.append({"run": run["name"], "original": o, "compressed": c})
            series.append({"device": dev["label"], "points": points})
        parts += ["<h2>Accuracy vs latency</h2>",
                  plots.img(lambda: scatter_figure(series), "accuracy_latency", "accuracy against latency p50")]
    else:
        parts.append(plots.missing())

    parts.append("<h2>Runs</h2>")
    for i, run in enumerate(runs):
        b, c = run["baseline"], run["compressed"]
        facts = [("directory", run["dir"]), ("model", run["model"]), ("method", run["method"]),
                 ("target", run["target"])]
        if run.get("input_shape"):
            facts.append(("input shape", "x".join(map(str, run["input_shape"]))))
        params_b = format_count(b["params"]) if b else "-"
        facts += [("MACs", f"{_macs(b)} -> {_macs(c)}"), ("params", f"{params_b} -> {format_count(c['params'])}"),
                  ("val accuracy", f"{_acc(b)} -> {_acc(c)}")]
        parts.append(f"<h3>{esc(run['name'])}</h3>")
        parts.append("".join(["<table><tbody>", *[f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts],
                              "</tbody></table>"]))
        if run["architecture"]:
            parts.append(architecture_section(run["architecture"], plots, name=f"widths_{i}", title=run["name"]))

    if merged["devices"]:
        parts.append("<h2>Devices</h2>")
        for dev in merged["devices"]:
            items = [("measured by", dev["source"]), ("device", dev["device"]), ("runtime", dev["runtime"])]
            items += [(k, v) for k, v in profile_items({"name": dev["profile"], "description": dev.get("description"),
                                                        "notes": dev["notes"]})]
            items += [(f"host {k}", v if not isinstance(v, dict) else ", ".join(f"{a} {b}" for a, b in v.items()))
                      for k, v in (dev.get("host") or {}).items()]
            if dev["files"]:
                items.append(("bench files", ", ".join(dev["files"])))
            parts.append(f"<h3>{esc(dev['label'])}</h3>" + "".join(
                ["<table><tbody>", *[f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items],
                 "</tbody></table>"]))

    if merged["unmatched"]:
        parts.append("<h2>Bench files left out</h2><p>These match no model file of the given runs (by SHA-256):</p><ul>"
                     + "".join(f"<li><code>{esc(p)}</code></li>" for p in merged["unmatched"]) + "</ul>")
    return page(f"Compression runs ({len(runs)})", "\n".join(parts))


def write_merged(out_dir, merged: dict, inline: bool = True) -> list[Path]:
    """Write ``report.md``, ``report.html`` and ``merged.json`` into ``out_dir``, each atomically.

    Both pages are rendered before anything is written. ``out_dir`` must not be one of the run
    directories (that would overwrite the run's own ``report.md``).
    """
    out_dir = Path(out_dir)
    target = out_dir.resolve()
    for run in merged["runs"]:
        if Path(run["dir"]).resolve() == target:
            raise CompressError(f"--out {out_dir} is the run directory of {run['name']}; "
                                "write the merged report to another folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise CompressError(f"--out {out_dir} is a file; give a folder for report.md and report.html")
    md = merged_markdown(merged)
    page_text = merged_html(merged, None if inline else out_dir / "plots")
    return _write_all(out_dir, {"report.md": lambda p: write_text(p, md),
                                "report.html": lambda p: write_text(p, page_text),
                                MERGED_JSON: lambda p: write_json(p, merged)})


def _write_all(out_dir: Path, writers: dict) -> list[Path]:
    """Call each ``writers[name](out_dir / name)``; where one fails (OSError), remove the files and
    the folder this call created and refuse in one line."""
    created: list[Path] = [] if out_dir.is_dir() else [out_dir]
    try:
        for name, write in writers.items():
            path = out_dir / name
            if not path.exists():
                created.insert(0, path)
            write(path)
    except OSError as exc:
        for path in created:
            if path.is_file():
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        raise cannot_write(out_dir, exc) from None
    return [out_dir / name for name in writers]


__all__ = ["merge_reports", "merged_html", "merged_markdown", "write_merged"]

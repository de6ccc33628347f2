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
that are neither a run report nor a bench JSON, are :class:`CompressError` s. Run reports are read
with :meth:`compressor.run_report.RunReport.from_dict`.

Each run carries its report's warnings (:func:`compressor.report_warnings.warnings_of`; a
``not_measured`` one is left out where a bench of its model on its target's profile is merged) and the
validation size its accuracies were measured on; its own latency rows keep the p50 of each
interleaved round, so the pages show the uncertainty its single-run report shows.

:func:`merge_reports` returns plain data; :func:`write_merged` writes ``report.md``,
``report.html`` (self-contained, plots embedded) and ``merged.json`` atomically.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from compress_base.errors import CompressError
from compress_base.fileio import cannot_write, write_json, write_text

from .merge_render import merged_html, merged_markdown
from .report_checks import HINT, STATS_FIELDS, check_fields, check_stats
from .report_warnings import validation_images, warnings_of
from .run_report import RunReport, Target

log = logging.getLogger(__name__)

MERGED_FORMAT = 1
REPORT_JSON = "report.json"
MERGED_JSON = "merged.json"
MODEL_SUFFIXES = (".onnx", ".engine", ".plan", ".trt")

_BENCH_FIELDS = {
    "created": "text", "runtime": "text", "model.sha256": "sha256", "model.file": "text",
    "profile.name": "text", "profile.description": "text", "profile.notes": "object",
    "host": "object", "host.hostname": "text", "host.nvpmodel": "object", "host.nvpmodel.name": "text",
    **{f"stats.{key}": kind for key, kind in STATS_FIELDS.items()},
}


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompressError(f"{path} is not valid JSON ({str(exc).splitlines()[0][:120]}); {HINT}") from None
    except OSError as exc:
        raise CompressError(f"cannot read {path}: {exc.strerror or exc}") from None


def _is_run_report(obj) -> bool:
    return isinstance(obj, dict) and ("format_version" in obj or ("compressed" in obj and "latency" in obj))


def _is_bench(obj) -> bool:
    return isinstance(obj, dict) and "stats" in obj and isinstance(obj.get("model"), dict)


def _check_bench(obj: dict, where: str) -> None:
    model = obj["model"]
    if not isinstance(model.get("sha256"), str) or not model["sha256"]:
        raise CompressError(f"{where} is a bench JSON without the model file's sha256; re-run `compress bench`")
    check_stats(obj["stats"], where)
    if not isinstance(obj.get("profile"), dict) or not obj["profile"].get("name"):
        raise CompressError(f"{where} is a bench JSON without a profile name; re-run `compress bench`")
    check_fields(obj, _BENCH_FIELDS, where, "fix the file or run `compress bench` again")


def _classify(path: Path) -> tuple[str, RunReport | dict, Path]:
    """``("run", report, run_dir)`` or ``("bench", result, file)``."""
    if not path.exists():
        raise CompressError(f"{path} does not exist; {HINT}")
    if path.is_dir():
        rj = path / REPORT_JSON
        if not rj.is_file():
            if (path / MERGED_JSON).is_file():
                raise CompressError(f"{path} holds a merged report, not a run; "
                                    "give the run directories it was made from")
            raise CompressError(f"{path} is not a run directory (it has no {REPORT_JSON}); {HINT}")
        report = _load_json(rj)
        if not _is_run_report(report):
            raise CompressError(f"{rj} is not a compress run report; {HINT}")
        return "run", RunReport.from_dict(report, str(rj)), path
    if path.suffix.lower() != ".json":
        raise CompressError(f"{path} is neither a run directory nor a bench JSON file; {HINT}")
    obj = _load_json(path)
    if _is_run_report(obj):
        return "run", RunReport.from_dict(obj, str(path)), path.parent
    if _is_bench(obj):
        _check_bench(obj, str(path))
        return "bench", obj, path
    raise CompressError(f"{path} is neither a run report nor a bench JSON; {HINT}")


def _gather(paths: list[Path]) -> tuple[list[tuple[Path, RunReport]], list[tuple[Path, dict]]]:
    """The runs and bench results among ``paths``, each once, with the bench files found in the run
    directories (a bad one found there is skipped with a warning)."""
    runs, benches, seen = [], [], set()
    for p in paths:
        kind, obj, where = _classify(p)
        key = (kind, where.resolve())
        if key in seen:
            log.warning("%s is given twice; using it once", p)
            continue
        seen.add(key)
        (runs if kind == "run" else benches).append((where, obj))
    if not runs:
        raise CompressError(f"no run directories among the inputs, only bench JSON files; {HINT}")
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
    return runs, benches


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


_SHORT = ("p50", "p90", "p99", "mean", "std", "throughput", "batch", "input_shape", "runs", "warmup", "runtime",
          "device", "versions", "threads")


def _short(stats: dict, rounds: bool = False) -> dict:
    """The figures of a measurement the merged report shows; with ``rounds`` the p50 of each
    interleaved round where the run recorded them (a run's own measurement, not a bench's)."""
    return {k: stats[k] for k in (*_SHORT, "rounds") if k in stats and (rounds or k != "rounds")}


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


def _models_by_sha(runs: list[tuple[Path, RunReport]]) -> dict[str, list[tuple[int, str, str]]]:
    """The runs' model files by SHA-256: ``sha -> [(run index, role, file name)]``."""
    cache: dict = {}
    by_sha: dict[str, list[tuple[int, str, str]]] = {}
    for i, (run_dir, _) in enumerate(runs):
        for f in sorted(run_dir.iterdir()):
            if f.is_file() and f.suffix.lower() in MODEL_SUFFIXES:
                by_sha.setdefault(_sha256(f, cache), []).append((i, _role(f), f.name))
    return by_sha


def _device(source: str, profile: str, runtime: str, device: str, host, description, notes) -> dict:
    """A device a row was measured on, as ``merged.json``'s ``devices`` list has it (but the label)."""
    return {"source": source, "profile": profile, "runtime": runtime, "device": device, "host": host,
            "notes": dict(notes or {}), "description": description, "files": []}


def _run_rows(runs: list[tuple[Path, RunReport]], names: list[str], devices: dict, rows: list[dict]) -> None:
    """A row per run measured where it ran (``compress`` on the target machine)."""
    for i, (_, report) in enumerate(runs):
        comp, base = report.latency.compressed, report.latency.baseline
        if comp is None:
            continue  # not measured where it ran: its device benches give its rows
        target = report.target or Target(name="?")
        key = ("run", target.name, comp.device, comp.runtime, None)
        devices.setdefault(key, _device("compress run", target.name, comp.runtime, comp.device, None,
                                        target.description, target.notes))
        rows[i][key] = {"original": _short(base.to_dict(), rounds=True) if base else None,
                        "compressed": _short(comp.to_dict(), rounds=True),
                        "files": [f"{names[i]}/{REPORT_JSON}"], "created": {}}


def _bench_device(path: Path, result: dict, devices: dict) -> tuple:
    """The key of the device ``result`` was measured on, added to ``devices`` if new."""
    stats, profile, host = result["stats"], result["profile"], result.get("host") or {}
    key = ("bench", profile["name"], stats.get("device", "?"), result.get("runtime", stats.get("runtime", "?")),
           host.get("hostname"))
    dev = devices.setdefault(key, _device("compress bench", profile["name"], key[3], key[2], host,
                                          profile.get("description"), profile.get("notes")))
    dev["files"].append(str(path))
    return key


def _add_bench(row: dict, role: str, path: Path, result: dict, run: tuple[str, RunReport], fname: str) -> None:
    """Put the bench ``result`` of the run's model ``fname`` (its ``role``) into the run's ``row``;
    of two benches of one model on one device the newer one counts."""
    (name, report), stats, created = run, result["stats"], str(result.get("created", ""))
    profile = result["profile"]["name"]
    if row[role] is not None:
        if created < row["created"].get(role, ""):
            log.warning("%s: an older bench of %s's %s model on %s than one already given; ignored",
                        path, name, role, profile)
            return
        log.warning("%s: newer bench of %s's %s model on %s replaces an earlier one", path, name, role, profile)
    if report.input_shape and stats.get("input_shape") and list(stats["input_shape"]) != list(report.input_shape):
        log.warning("%s timed %s at %s but run %s was built for %s", path, fname,
                    "x".join(map(str, stats["input_shape"])), name, "x".join(map(str, report.input_shape)))
    row[role] = _short(stats)
    row["created"][role] = created
    row["files"].append(str(path))


def _bench_rows(benches, runs, names: list[str], devices: dict, rows: list[dict]) -> tuple[list, list]:
    """Match each bench result to the runs' model files; returns ``merged.json``'s ``benches`` and
    ``unmatched`` (a bench that matches no run is left out with a warning)."""
    by_sha = _models_by_sha(runs) if benches else {}  # hashed only when there is something to match
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
        key = _bench_device(path, result, devices)
        for i, role, fname in matches:
            row = rows[i].setdefault(key, {"original": None, "compressed": None, "files": [], "created": {}})
            _add_bench(row, role, path, result, (names[i], runs[i][1]), fname)
    return bench_info, unmatched


def _run_entry(name: str, run_dir: Path, report: RunReport, rows: dict, devices: dict, labels: dict) -> dict:
    """One run of ``merged.json``: its figures, its warnings and a latency row per device."""
    latency = [{"device": labels[key], "source": devices[key]["source"], "original": row["original"],
                "compressed": row["compressed"], "files": row["files"]} for key, row in rows.items()]
    base = report.baseline
    return {"name": name, "dir": str(run_dir), "model": report.model, "method": report.method or "?",
            "target": (report.target.name if report.target else None) or "?", "input_shape": report.input_shape,
            "baseline": dataclasses.asdict(base) if base else None,
            "compressed": dataclasses.asdict(report.compressed), "validation_images": validation_images(report),
            "architecture": report.architecture.to_dict() if report.architecture else {}, "latency": latency,
            "warnings": _warnings(report, rows, devices)}


def _warnings(report: RunReport, rows: dict, devices: dict) -> list[dict]:
    """The run's report warnings (:func:`compressor.report_warnings.warnings_of`), less ``not_measured``
    where a bench of its compressed model on its target's profile answers it here."""
    target = report.target.name if report.target else None
    benched = any(key[0] == "bench" and devices[key]["profile"] == target and row["compressed"] is not None
                  for key, row in rows.items())
    return [w.to_dict() for w in warnings_of(report) if not (benched and w.kind == "not_measured")]


def merge_reports(paths) -> dict:
    """Merge run directories and bench JSON files (see the module docstring) into plain data.

    Returns ``{"format", "runs": [{name, dir, model, method, target, baseline, compressed,
    validation_images, architecture, latency: [{device, ...}], warnings: [{kind, message}]}],
    "devices": [{label, source, profile, runtime, device, host, notes, files}], "benches": [{path,
    file, sha256, matched}], "unmatched": [paths]}``. A run's own latency rows keep the p50 of each
    interleaved round (``rounds``) where it recorded them; bench rows hold what the bench measured.
    """
    paths = [Path(p) for p in (paths or [])]
    if not paths:
        raise CompressError(f"nothing to report: {HINT}")
    runs, benches = _gather(paths)
    names = _run_names([d for d, _ in runs])
    # device key -> description; per run: device key -> {original, compressed, files, created}
    devices: dict[tuple, dict] = {}
    rows: list[dict[tuple, dict]] = [{} for _ in runs]
    _run_rows(runs, names, devices, rows)
    bench_info, unmatched = _bench_rows(benches, runs, names, devices, rows)
    labels = _labels(devices)
    out_runs = [_run_entry(names[i], d, report, rows[i], devices, labels) for i, (d, report) in enumerate(runs)]
    used = {k for r in rows for k in r}
    out_devices = [{"label": labels[k], **dev} for k, dev in devices.items() if k in used]
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

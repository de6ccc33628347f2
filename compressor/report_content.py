"""The parts of a run report as rows and items (plain text), rendered by report.md and report.html
alike: the precision, the training curves as tables, kept channels per layer, the slowest nodes,
the search trace's shape, and the reproduce block and its lead."""
from __future__ import annotations

import math
import shlex
import sys

from .report_uncertainty import accuracy_text
from .run_report import Reproduce, RunReport

EPOCH_COLUMNS = (("epoch", "epoch", "{:d}"), ("loss", "loss", "{:.4f}"), ("train_acc", "train acc", "{:.2%}"),
                 ("val_acc", "val acc", "{:.2%}"), ("lr", "lr", "{:.3g}"), ("seconds", "seconds", "{:.1f}"))
# bookkeeping fields of a search record that are no figure of the search
NOT_TRACED = frozenset({"epoch", "step", "steps", "seconds", "value", "updates", "repair", "fits", "converged",
                        "repaired"})
VERSIONED = ("torch", "torchvision", "onnx", "onnxruntime", "numpy", "torch_pruning", "tensorrt")


def precision_items(report: RunReport) -> list[tuple[str, str]]:
    """What the shipped precision is and what it cost (empty for a report without one)."""
    p = report.precision
    if p is None:
        return []
    items = [("precision", p.precision), ("file", p.file or "model.onnx (fp32)")]
    if p.input_shape is not None:
        items.append(("measured at", f"{'x'.join(map(str, p.input_shape))}, the run's evaluation size (the model "
                                     "exported and converted again there), through onnxruntime"))
    elif report.resolution is not None:
        items.append(("measured at", f"the deployment input {'x'.join(map(str, report.resolution.deployment))}, "
                                     "through onnxruntime"))
    if p.recipe:
        items.append(("recipe", p.recipe))
    if p.calibration_images:
        items.append(("calibration images", str(p.calibration_images)))
    items.append(("fp32 accuracy", accuracy_text(p.fp32_accuracy, p.images)))
    if p.file:  # a low-precision file beside the fp32 one
        items += [(f"{p.precision} accuracy", accuracy_text(p.accuracy, p.images)),
                  ("top-1 agreement with fp32", f"{100 * p.agreement:.1f}% of {p.images} images")]
    return items


def sensitive_rows(report: RunReport) -> tuple[list[str], list[list[str]]]:
    """The layers whose precision costs most: accuracy with each alone kept in fp32."""
    p = report.precision
    rows = [[s.layer, f"{100 * s.accuracy_with_layer_fp32:.1f}%",
             f"{100 * (s.accuracy_with_layer_fp32 - p.accuracy):+.1f}"]
            for s in sorted(p.sensitive_layers, key=lambda s: -s.accuracy_with_layer_fp32)] if p else []
    return ["layer", "accuracy with it in fp32", "points regained"], rows


def epoch_rows(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One training's per-epoch records as a table (the columns any record has)."""
    columns = [c for c in EPOCH_COLUMNS if any(c[0] in r for r in records)]
    rows = [[fmt.format(r[key]) if isinstance(r.get(key), (int, float)) else "-" for key, _, fmt in columns]
            for r in records]
    return [title for _, title, _ in columns], rows


def width_rows(report: RunReport) -> tuple[list[str], list[list]]:
    """Kept channels per layer group, in model order (as the report lists them)."""
    arch = report.architecture
    if arch is None or not arch.widths:
        return [], []
    full = arch.full_widths or {}
    rows = [[name, kept, full.get(name, "-"), f"{100 * kept / full[name]:.0f}%" if full.get(name) else "-"]
            for name, kept in arch.widths.items()]
    return ["group", "kept", "original", "kept %"], rows


def slowest_rows(report: RunReport) -> tuple[list[str], list[list[str]]]:
    """The compressed model's slowest nodes (onnxruntime's profile), slowest first."""
    lat_c = report.latency.compressed
    slowest = lat_c.settings.get("slowest_nodes") if lat_c else None
    if not isinstance(slowest, list):
        return [], []
    rows = [[str(n.get("node", "?")), str(n.get("op", "?")), f"{n.get('mean_ms', 0):.3f}",
             f"{100 * n.get('share', 0):.1f}%"] for n in slowest if isinstance(n, dict)]
    return ["node", "op", "mean ms", "share of node time"], rows


def measurement_settings(settings: dict) -> str:
    """A latency measurement's settings as ``key value`` text (the node profile left out: it is a table)."""
    parts = []
    for key, value in sorted(settings.items()):
        if key == "slowest_nodes":
            continue
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{key.replace('_', ' ')}: {text}")
    return "; ".join(parts)


def trace_summary(method: str | None, history: list) -> list[str]:
    """What the search trace holds, in words: its records and the fields a plot draws."""
    records = [r for r in history if isinstance(r, dict)]
    if not records:
        return ["The search made no moves (the original met the budget, or the method is one-shot)."]
    unit = ("epoch" if "epoch" in records[0] else "step" if "step" in records[0]
            else "move" if "move" in records[0] else "record")
    numeric = sorted({k for r in records for k, v in r.items() if _is_number(v) and k not in NOT_TRACED})
    lines = [f"{method or 'the search'}: {len(records)} {unit}s recorded in search.json"]
    moves = [r for r in records if isinstance(r.get("move"), str) and r.get("move") != "none"]
    if moves:
        kinds = {}
        for r in moves:
            kinds[r["move"]] = kinds.get(r["move"], 0) + 1
        lines.append("moves: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
    candidates = sum(len(r["candidates"]) for r in records if isinstance(r.get("candidates"), list))
    if candidates:
        lines.append(f"{candidates} candidates scored")
    if numeric:
        lines.append("figures per " + unit + ": " + ", ".join(numeric))
    return lines


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def reproduce_of(command: str, argv: list[str] | None = None) -> Reproduce:
    """``command`` (the ``compress`` command with the run's settings), this process's command line and
    the versions of the packages a run depends on."""
    from importlib import metadata

    from . import __version__

    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(("/compress", "__main__.py")):
        argv[0] = "compress"
    versions = {"compressor": __version__, "python": sys.version.split()[0]}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            continue
    return Reproduce(command=command, process=shlex.join(argv), versions=versions)


# what the names in a compressor.compress() reproduce call stand for, by what the run held in memory
_STAND_FOR = {("model",): "model stands for the model",
              ("data",): "train_loader and val_loader stand for the DataLoaders",
              ("model", "data"): "model, train_loader and val_loader stand for the model and DataLoaders"}


def reproduce_lead(report: RunReport) -> str:
    """The sentence before the reproduce block: it is the ``compress run`` command, or for a run made
    by ``compressor.compress`` with a model or DataLoaders in memory (setting ``in_memory``) the
    Python call, whose names stand for what the caller held."""
    held = (report.settings or {}).get("in_memory")
    held = tuple(k for k in ("model", "data") if isinstance(held, list) and k in held)
    if not held:
        return "The command with this run's settings (its data and model as named there):"
    rest = "" if len(held) == 2 else f"; its {'data' if held == ('model',) else 'model'} as named there"
    return (f"The compressor.compress() call with this run's settings ({_STAND_FOR[held]} it held in memory, as "
            f"its comment says{rest}):")


__all__ = ["epoch_rows", "measurement_settings", "precision_items", "reproduce_lead", "reproduce_of", "sensitive_rows",
           "slowest_rows", "trace_summary", "width_rows"]

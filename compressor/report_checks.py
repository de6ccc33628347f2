"""Field checks for JSON read from files (run reports, bench results): a wrong type, NaN, Infinity
or a negative figure is one :class:`CompressError` line naming the file, the field and what it must be.

Used by :meth:`compressor.run_report.RunReport.from_dict` and by ``compress report``'s bench loading.
"""
from __future__ import annotations

import json
import math
import re

from compress_base.errors import CompressError

HINT = "give run directories written by `compress` or JSON files written by `compress bench`"


def is_number(v) -> bool:
    """An int or float, not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_amount(v) -> bool:
    return is_number(v) and math.isfinite(v) and v >= 0


# What a field read from a file must be: a test, and the words for the error message.
KINDS = {
    "object": (lambda v: isinstance(v, dict), "an object"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "objects": (lambda v: isinstance(v, list) and all(isinstance(t, dict) for t in v), "a list of objects"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "texts": (lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v), "a list of strings"),
    "amount": (_is_amount, "a non-negative number"),
    "amounts": (lambda v: isinstance(v, dict) and all(map(_is_amount, v.values())),
                "an object of non-negative numbers"),
    "fraction": (lambda v: _is_amount(v) and v <= 1, "a number between 0 and 1"),
    "count": (_is_count, "a non-negative integer"),
    "counts": (lambda v: isinstance(v, dict) and all(map(_is_count, v.values())),
               "an object of non-negative integers"),
    "shape": (lambda v: isinstance(v, list) and bool(v) and all(_is_count(d) and d > 0 for d in v),
              "a list of positive integers"),
    "sha256": (lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None, "64 hex digits"),
    "numbers": (lambda v: isinstance(v, list) and all(map(_is_amount, v)), "a list of non-negative numbers"),
    "texts by name": (lambda v: isinstance(v, dict) and all(isinstance(t, str) for t in v.values()),
                      "an object of strings"),
    "curves": (lambda v: isinstance(v, dict) and all(isinstance(r, list) and all(isinstance(e, dict) for e in r)
                                                     for r in v.values()),
               "an object of lists of objects"),
}

# One latency measurement (exporters.stats.LatencyStats as a dict), in a run report or a bench result.
STATS_FIELDS = {"p50": "amount", "p90": "amount", "p99": "amount", "mean": "amount", "std": "amount",
                "throughput": "amount", "warmup": "count", "runs": "count", "batch": "count", "threads": "count",
                "input_shape": "shape", "runtime": "text", "device": "text", "versions": "object",
                "settings": "object", "rounds": "numbers"}


# run report fields (compressor.run_report): dotted name -> kind, checked when a report.json is read
LATENCY_SIDES = ("compressed", "baseline", "precision")  # the measured models of ``latency``
RUN_FIELDS = {
    "method": "text", "target": "object", "target.name": "text", "target.description": "text",
    "target.quantization": "text", "target.notes": "object", "input_shape": "shape", "notes": "texts",
    **{f"{part}.{key}": kind for part in ("baseline", "compressed")
       for key, kind in (("macs", "amount"), ("params", "amount"), ("accuracy", "fraction"))},
    "latency.baseline": "object", "latency.compressed": "object", "latency.precision": "object",
    **{f"latency.{part}.{key}": kind for part in LATENCY_SIDES for key, kind in STATS_FIELDS.items()},
    "architecture": "object", "architecture.widths": "counts", "architecture.full_widths": "counts",
    "architecture.blocks": "object", "architecture.dropped_blocks": "texts",
    # read by report.md / report.html and the summary line as well
    "weights": "text", "out": "text", "train_resolution": "count", "budget": "object",
    "data": "object", "data.source": "text", "data.train": "count", "data.val": "count", "data.num_classes": "count",
    "predicted_latency_ms": "object", "predicted_latency_ms.baseline": "amount",
    "predicted_latency_ms.compressed": "amount",
    "onnx": "object", "onnx.path": "text", "onnx.opset": "count", "onnx.max_abs_diff": "amount", "onnx.checker": "text",
    "spec": "object", "architecture.file": "text", "architecture.cell_edges": "list",
    "fixed_layers": "objects", "search": "object", "search.steps": "count", "search.file": "text",
    "latency_check": "objects", "settings": "object", "timings_s": "amounts",
    "resolution": "object", "resolution.deployment": "shape", "resolution.search": "count",
    "resolution.evaluation": "count", "preprocess": "object", "exported_accuracy": "object",
    "exported_accuracy.images": "count", "precision": "object", "precision.precision": "text",
    "precision.images": "count", "precision.fp32_accuracy": "fraction", "precision.accuracy": "fraction",
    "precision.agreement": "fraction", "precision.file": "text", "precision.recipe": "text",
    "precision.calibration_images": "count", "precision.input_shape": "shape",
    "precision.sensitive_layers": "objects",
    "training": "curves", "reproduce": "object", "reproduce.command": "text",
    "reproduce.process": "text", "reproduce.versions": "texts by name",
    "warnings": "objects",  # derived from the rest (compressor.report_warnings): checked, not read
    **{f"exported_accuracy.{side}_{how}": "fraction" for side in ("compressed", "baseline")
       for how in ("onnx", "pytorch")},
}
ITEM_FIELDS = {"fixed_layers": {"layers": "texts", "reason": "text"},
               "latency_check": {"predicted_ms": "amount", "measured_ms": "amount", "macs": "amount"},
               "warnings": {"kind": "text", "message": "text"}}
EPOCH_FIELDS = {"epoch": "count", "loss": "amount", "train_acc": "fraction", "val_acc": "fraction", "lr": "amount",
                "seconds": "amount"}


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


def check_fields(obj: dict, fields: dict, where: str, remedy: str, prefix: str = "") -> None:
    """Refuse NaN/Infinity anywhere in ``obj`` and a present field of ``fields`` (dotted name ->
    kind of :data:`KINDS`) of the wrong kind: one line naming the file, the field and its kind.
    ``prefix`` is put before the field names in the message (``obj`` is a part of the file)."""
    bad = _non_finite(obj)
    if bad:
        raise CompressError(f"{where}: field '{prefix}{bad[0]}' must be a finite number, got {_brief(bad[1])}; "
                            f"{remedy}")
    for field, kind in fields.items():
        value = obj
        for key in field.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        test, words = KINDS[kind]
        if value is not None and not test(value):
            raise CompressError(f"{where}: field '{prefix}{field}' must be {words}, got {_brief(value)}; {remedy}")


def check_stats(stats, where: str) -> None:
    """Refuse a latency measurement without p50/p90/p99 numbers."""
    if not isinstance(stats, dict) or not all(is_number(stats.get(k)) for k in ("p50", "p90", "p99")):
        raise CompressError(f"{where} has no latency p50/p90/p99 figures; {HINT}")

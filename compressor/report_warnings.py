"""The warnings of a run report: what a reader must not miss, derived from a
:class:`~compressor.run_report.RunReport` alone (report.json, report.md, report.html and the CLI's
last lines all show the same list).

Each check is a function of the report returning its warnings (none on a clean report):

- ``accuracy_drop``: the compressed model lost more than ``warn_accuracy_drop`` points (a setting,
  default 1) against the original;
- ``precision_drop``: the low-precision model lost more than that against its fp32 model (naming
  the layers most sensitive to the precision);
- ``validation_size``: the validation set is too small to resolve a difference of that size
  (twice the standard error of a difference is above it);
- ``budget_slack``: a budgeted cost ended far below its bound (under :data:`BUDGET_SLACK` of it);
  accuracy may have been given away;
- ``latency_spread``: the measurement is too noisy for the ratio quoted (the p90/p50 tail, the
  spread of the interleaved rounds or the speed-up's range beyond a bound), with how to measure better;
- ``fixed_layers``: layers the search could not shrink (those kept by ``--keep`` are the user's choice
  and not warned about);
- ``not_measured``: the target's latency was not measured on its device (or not with its runtime).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .report_uncertainty import accuracy_se, difference_se, round_spread, speedup, speedup_text
from .run_report import RunReport
from .units import format_count

DEFAULT_ACCURACY_DROP = 1.0  # points; RunConfig.warn_accuracy_drop
BUDGET_SLACK = 0.8  # a cost under this share of its bound is "far below" it
TAIL_RATIO = 1.5  # p90 / p50 beyond this: a heavy tail
ROUND_SPREAD = 0.25  # (max - min) / median of the rounds' p50s beyond this
SPEEDUP_RANGE = 0.25  # (high - low) / ratio of the per-round speed-ups beyond this
MEASURE_BETTER = ("measure on a quiet machine (no other jobs, a fixed CPU frequency), pin the threads "
                  "(the profile's measure.threads = 1), and take more runs (--latency-runs), or measure on the "
                  "device with `compress bench`")


@dataclass(frozen=True)
class ReportWarning:
    """One warning: its kind (the check that raised it) and a sentence for the reader."""

    kind: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def threshold(report: RunReport) -> float:
    """The accuracy drop (points) that makes a warning: the run's ``warn_accuracy_drop`` setting."""
    value = (report.settings or {}).get("warn_accuracy_drop")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else DEFAULT_ACCURACY_DROP


def validation_images(report: RunReport) -> int | None:
    """How many images the quoted accuracies were measured on."""
    if report.exported_accuracy is not None:
        return report.exported_accuracy.images
    return report.data.val if report.data is not None else None


def _accuracy_drop(report: RunReport) -> list[ReportWarning]:
    b, c = report.baseline, report.compressed
    if b is None:
        return []
    drop = round(100 * (b.accuracy - c.accuracy), 9)  # points; 0.900 - 0.890 is 1 point, not 1.0000000000000009
    if drop <= threshold(report):
        return []
    return [ReportWarning("accuracy_drop", (
        f"accuracy fell {drop:.1f} points, from {100 * b.accuracy:.1f}% to {100 * c.accuracy:.1f}% (warning above "
        f"{threshold(report):g}): fine-tune longer (--epochs), relax the budget or try another --method before "
        "shipping this model"))]


def _precision_drop(report: RunReport) -> list[ReportWarning]:
    p = report.precision
    if p is None:
        return []
    drop = round(100 * (p.fp32_accuracy - p.accuracy), 9)
    if drop <= threshold(report):
        return []
    layers = sorted(p.sensitive_layers, key=lambda s: -s.accuracy_with_layer_fp32)
    named = (", ".join(f"{s.layer} ({100 * s.accuracy_with_layer_fp32:.1f}% with it in fp32)" for s in layers[:5])
             if layers else "none measured")
    return [ReportWarning("precision_drop", (
        f"{p.precision} costs {drop:.1f} points: {100 * p.accuracy:.1f}% against {100 * p.fp32_accuracy:.1f}% in "
        f"fp32 on {p.images} images (warning above {threshold(report):g}); the most sensitive layers: {named}. "
        "Keep them in fp32, calibrate on more images, or ship fp32"))]


def _validation_size(report: RunReport) -> list[ReportWarning]:
    limit = threshold(report)
    out = []
    if limit <= 0:  # no set of images resolves a difference of 0 points: the accuracy-drop warnings speak
        return out
    n = validation_images(report)
    b, c = report.baseline, report.compressed
    pairs = []
    if n and b is not None:
        pairs.append(("original and compressed", b.accuracy, c.accuracy, n))
    p = report.precision
    if p is not None and p.images and p.file:  # a low-precision file was scored beside fp32
        pairs.append((f"fp32 and {p.precision}", p.fp32_accuracy, p.accuracy, p.images))
    for what, x, y, images in pairs:
        se = 100 * difference_se(x, y, images)
        if 2 * se > limit:
            needed = _images_for(x, y, limit)
            out.append(ReportWarning("validation_size", (
                f"{images} validation images cannot resolve a {limit:g}-point difference between the {what} models: "
                f"each accuracy has a standard error of about {100 * accuracy_se(x, images):.1f} points and their "
                f"difference {se:.1f} points, so differences under {2 * se:.1f} points are noise; "
                f"use about {needed} images or more")))
    return out


def _images_for(p: float, q: float, points: float) -> int:
    """Images that bring twice the standard error of ``p - q`` down to ``points``."""
    variance = max(p * (1 - p) + q * (1 - q), 0.01)
    images = variance * (2 * 100 / points) ** 2
    step = 10 ** max(0, math.floor(math.log10(images)) - 1)  # rounded up to two significant digits
    return int(math.ceil(images / step) * step)


def _budget_slack(report: RunReport) -> list[ReportWarning]:
    budget, b, c = report.budget or {}, report.baseline, report.compressed
    if b is None:
        return []
    lat_b, lat_c, pred = report.latency.baseline, report.latency.compressed, report.predicted_latency_ms
    costs = {"macs": (b.macs, c.macs), "params": (b.params, c.params)}
    if lat_b is not None and lat_c is not None:
        costs["latency_ms"] = (lat_b.p50, lat_c.p50)
    elif pred is not None:
        costs["latency_ms"] = (pred.baseline, pred.compressed)
    out = []
    for key, (original, compressed) in costs.items():
        bound = budget.get(key)
        if not isinstance(bound, (int, float)) or bound <= 0 or original <= bound:
            continue  # no bound, or the original met it already
        if compressed < BUDGET_SLACK * bound:
            show = (lambda v: f"{v:.3g} ms") if key == "latency_ms" else format_count
            out.append(ReportWarning("budget_slack", (
                f"{key} {show(compressed)} is {100 * compressed / bound:.0f}% of the {show(bound)} budget: the model "
                "was shrunk far more than asked, which usually costs accuracy; search again (another --method, "
                "more --search-epochs) or give the budget you need")))
    return out


def _latency_spread(report: RunReport) -> list[ReportWarning]:
    lat = report.latency
    reasons = []
    low = report.precision.precision if report.precision is not None else "low-precision"
    for side, name in (("baseline", "baseline"), ("compressed", "compressed"), ("precision", low)):
        stats = getattr(lat, side)
        if stats is None or stats.p50 <= 0:
            continue
        if stats.p90 / stats.p50 > TAIL_RATIO:
            reasons.append(f"the {name} model's p90 is {stats.p90 / stats.p50:.1f}x its p50")
        spread = round_spread(stats)
        if spread is not None and spread > ROUND_SPREAD:
            reasons.append(f"the {name} model's rounds differ by {100 * spread:.0f}% of its p50 "
                           f"({min(stats.rounds):.3g} to {max(stats.rounds):.3g} ms)")
    s = speedup(lat.baseline, lat.compressed)
    if s is not None and s.relative_range is not None and s.relative_range > SPEEDUP_RANGE:
        reasons.append(f"the speed-up ranges over {speedup_text(s)} across rounds")
    if not reasons:
        return []
    return [ReportWarning("latency_spread", (
        f"latency is too noisy for the ratios quoted: {'; '.join(reasons)}. Read them as rough; to measure better, "
        f"{MEASURE_BETTER}"))]


def _fixed_layers(report: RunReport) -> list[ReportWarning]:
    out = []
    for entry in report.fixed_layers:
        if entry.reason.startswith("kept ("):  # --keep: the user asked for it
            continue
        layers = ", ".join(entry.layers[:6]) + (f" and {len(entry.layers) - 6} more" if len(entry.layers) > 6 else "")
        out.append(ReportWarning("fixed_layers", f"layers left at their full width: {layers} ({entry.reason})"))
    return out


def _not_measured(report: RunReport) -> list[ReportWarning]:
    target, lat_c = report.target, report.latency.compressed
    name = target.name if target is not None else "the target"
    if lat_c is None:
        predicted = report.predicted_latency_ms
        said = (f"the {predicted.compressed:.3g} ms quoted is the latency table's prediction; "
                if predicted is not None else "")
        return [ReportWarning("not_measured", (
            f"latency was not measured on {name}'s device: {said}measure model.onnx there with `compress bench "
            f"model.onnx --target {name}` and merge the result with `compress report`"))]
    runtimes = target.runtimes if target is not None else None
    if runtimes and lat_c.runtime != runtimes[0]:
        return [ReportWarning("not_measured", (
            f"latency was measured with {lat_c.runtime}, not {runtimes[0]}, the runtime {name} deploys with: "
            f"measure there with `compress bench model.onnx --target {name}`"))]
    return []


CHECKS: list[Callable[[RunReport], list[ReportWarning]]] = [
    _accuracy_drop, _precision_drop, _validation_size, _budget_slack, _latency_spread, _fixed_layers, _not_measured]


def warnings_of(report: RunReport) -> list[ReportWarning]:
    """Every warning the report's figures call for, in the order of :data:`CHECKS`."""
    return [w for check in CHECKS for w in check(report)]


__all__ = ["BUDGET_SLACK", "CHECKS", "ReportWarning", "threshold", "validation_images", "warnings_of"]

"""Checking a latency model on the target: measured against predicted latency of architectures
its calibration did not see (:func:`evaluate_predictor`, what ``compress lut --evaluate`` reports).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from exporters.runners import make_runner

from ..architecture import Architecture
from ..runtime import Runtime
from .build import measure_settings
from .calibration import (
    arch_hash,
    calibration_architectures,
    fit_calibration,
    measure_architectures,
    random_architecture,
)
from .predictor import LatencyModel

__all__ = ["evaluate_predictor", "spearman"]


def _errors(predicted, measured) -> dict:
    rel = np.abs(np.asarray(predicted) - np.asarray(measured)) / np.asarray(measured)
    return {"within_10pct": float(np.mean(rel <= 0.10)), "mean_abs_rel_err": float(rel.mean()),
            "max_abs_rel_err": float(rel.max()), "spearman": spearman(predicted, measured)}


def evaluate_predictor(lat: LatencyModel, space, model: nn.Module, profile, n: int = 20, seed: int = 1, *,
                       rounds: int | None = None, stat: str | None = None, warmup: int | None = None,
                       runs: int | None = None, threads: int | None = None, runner=None, keep_prob: float = 0.5,
                       reference: bool = True, runtime: Runtime | None = None) -> dict:
    """Measured vs predicted latency on ``n`` random architectures the calibration did not use.

    Measurement settings default to those the table was measured with (its ``settings``); a
    progress bar shows where ``runtime`` (a :class:`~compressor.runtime.Runtime`) is not quiet.
    Returns ``within_10pct`` (fraction of predictions within ±10% of the measurement),
    ``mean_abs_rel_err``, ``max_abs_rel_err``, ``spearman`` and ``pairs`` (one dict per
    architecture), for the model as built.

    With ``reference`` (and a calibration made here), the calibration architectures are timed
    again in the same rounds: ``drift`` is the median ratio of their latency now to their latency
    at calibration (how much this machine's speed moved since; 1.0 on a quiet machine), and
    ``same_session`` holds the same error figures for the calibration refitted on those fresh
    measurements, which leaves the evaluated architectures unseen and removes the drift.
    """
    done = lat.table.settings
    rounds = int(done.get("rounds", 7)) if rounds is None else rounds
    stat = str(done.get("stat", "min")) if stat is None else stat
    warmup = int(done["warmup"]) if warmup is None and "warmup" in done else warmup
    runs = int(done["runs"]) if runs is None and "runs" in done else runs
    threads = int(lat.table.hardware.get("threads", 0)) if threads is None else threads
    warmup, runs, threads = measure_settings(profile, warmup, runs, threads, rounds)
    precision = str(lat.table.hardware.get("precision", "fp32"))  # the architectures are timed as the table was
    if runner is None:
        runner = make_runner(lat.table.hardware["runtime"], threads, precision,
                             clock=lat.table.hardware.get("clock", "wall"))
    cal = lat.calibration()
    used = {p["arch"] for p in cal.get("points", [])}
    rng = np.random.default_rng(seed)
    archs: list[Architecture] = []
    tries = 0
    while len(archs) < n and tries < 50 * n:
        tries += 1
        arch = random_architecture(space, rng, keep_prob)
        if arch_hash(arch) not in used | {arch_hash(a) for a in archs}:
            archs.append(arch)
    refs: list[Architecture] = []
    if reference and "archs" in cal:
        refs = calibration_architectures(space, int(cal["archs"]), int(cal.get("seed", 0)))
        then = {p["arch"]: p["ms"] for p in cal["points"]}
        refs = [r for r in refs if arch_hash(r) in then]
    ms = measure_architectures(space, model, archs + refs, runner, batch=profile.batch, warmup=warmup, runs=runs,
                               rounds=rounds, seed=seed, stat=stat, runtime=runtime, precision=precision,
                               recipe=profile.quantization)
    measured, ref_now = ms[: len(archs)], ms[len(archs):]
    predicted = [lat.predict(a) for a in archs]
    out = {"n": len(archs), **_errors(predicted, measured)}
    if refs:
        out["drift"] = float(np.median([m / then[arch_hash(r)] for r, m in zip(refs, ref_now)]))
        a, c, b = fit_calibration([lat.features(r) for r in refs], ref_now)
        pred = [a * f0 + c * f1 + b for f0, f1 in (lat.features(x) for x in archs)]
        out["same_session"] = {"a": a, "c_ms_per_mb": c, "b": b, **_errors(pred, measured)}
        out["reference"] = [{"arch": arch_hash(r), "then_ms": then[arch_hash(r)], "now_ms": float(m)}
                            for r, m in zip(refs, ref_now)]
    out["pairs"] = [{"macs": int(space.macs(a)), "predicted_ms": float(p), "measured_ms": float(m),
                     "rel_err": float(abs(p - m) / m)} for a, p, m in zip(archs, predicted, measured)]
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (no tie correction)."""
    rx = np.argsort(np.argsort(np.asarray(x)))
    ry = np.argsort(np.argsort(np.asarray(y)))
    if len(rx) < 2:
        return 1.0
    return float(np.corrcoef(rx, ry)[0, 1])

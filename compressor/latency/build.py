"""Making a :class:`~compressor.latency.predictor.LatencyModel`: measuring what its table lacks and
calibrating it on the target (:func:`build_latency_model`, :func:`build_lut`), or reading a table
measured elsewhere (:func:`offline_model`).
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from compress_base.errors import CompressError
from exporters.runners import make_runner
from exporters.runtime_choice import choose_runtime

from ..architecture import Architecture
from ..runtime import Runtime
from .calibration import (
    arch_hash,
    arch_probes,
    calibration_architectures,
    fit_calibration,
    model_fingerprint,
    pooled_calibration,
)
from .layers import trace_layers
from .predictor import LatencyModel
from .probes import NULL_KEY, Probe, in_precision, measure_probes
from .table import (
    LatencyTable,
    channel_block,
    describe_hardware,
    graph_precision,
    hardware_fingerprint,
    read_tables,
    summarize,
    tables_for,
)

log = logging.getLogger(__name__)

__all__ = ["build_latency_model", "build_lut", "in_table_precision", "offline_model", "measure_settings"]


def measure_settings(profile, warmup, runs, threads, rounds):
    """Per-round warm-up and timed runs (the profile's totals spread over the rounds), and threads."""
    m = profile.measure
    warmup = max(3, -(-m.warmup // rounds)) if warmup is None else warmup
    runs = max(5, -(-m.runs // rounds)) if runs is None else runs
    return warmup, runs, m.threads if threads is None else threads


def _apply(lat: LatencyModel, cal: dict) -> None:
    lat.a, lat.b = float(cal["a"]), float(cal["b"])
    lat.c = float(cal.get("c_ms_per_mb", 0.0))


def _table_grid(table: LatencyTable, fp: str, grid: int | None) -> int:
    """``grid``, else the one ``fp`` was calibrated with, else the table's."""
    if grid is not None:
        return grid
    cal = table.calibrations.get(fp)
    return int(cal["grid"]) if cal and "grid" in cal else int(table.settings.get("grid", 5))


def offline_model(space, model, profile, tables: Sequence[LatencyTable], grid: int | None) -> LatencyModel:
    """The model from one of ``tables`` (one profile's, maybe of several hardware): the first that
    holds this model's calibration and every layer it needs, else the first holding every layer."""
    layers, dims = trace_layers(space, model, profile.batch)
    fp = model_fingerprint(space, layers)
    models = [LatencyModel(space, layers, dims, t, _table_grid(t, fp, grid), fingerprint=fp) for t in tables]
    lat = min(models, key=lambda m: (bool(m.table.missing(m.keys())), fp not in m.table.calibrations))
    if len(tables) > 1:
        log.info("latency table %s holds %d tables for %s: using the one measured on %s", lat.table.source,
                 len(tables), profile.name, describe_hardware(lat.table.hardware))
    table, grid = lat.table, lat.grid
    cal = table.calibrations.get(fp)
    lat.compile()
    if cal and int(cal.get("grid", grid)) == grid:
        _apply(lat, cal)
    else:
        pooled = pooled_calibration(table)
        lat.a, lat.c, lat.b = pooled if pooled else (1.0, 0.0, 0.0)
        log.warning("latency table %s holds no calibration for %s: using %s (a=%.3g, b=%.3g ms); predictions may be "
                    "off by a constant factor", table.source, fp,
                    "the pooled fit of its other models" if pooled else "the raw sum of layers", lat.a, lat.b)
    return lat


def in_table_precision(tables: Sequence[LatencyTable], precision: str, source: str) -> list[LatencyTable]:
    """The ``tables`` measured in ``precision`` (a table without the field: fp32); refuse when none is."""
    found = [t for t in tables if t.hardware.get("precision", "fp32") == precision]
    if not found:
        held = ", ".join(sorted({str(t.hardware.get("precision", "fp32")) for t in tables}))
        raise CompressError(f"latency table {source} was measured in {held}, not in {precision}, the precision this "
                            f"model ships in: measure a table for {precision} on the target")
    return found


def _table_to_extend(path: str | os.PathLike | None, profile: str, hardware: dict, cache: bool) -> LatencyTable:
    """The table of the file at ``path`` measured for ``profile`` on ``hardware``; a new one if the
    file does not exist, or if it is a ``cache`` holding tables for other hardware only."""
    if path is None or not Path(path).exists():
        return LatencyTable(profile, hardware, source=str(path or ""))
    tables = read_tables(path)
    if not cache:
        return tables_for(tables, profile, hardware, str(path))[0]
    mine = [t for t in tables if t.matches(profile, hardware)]
    if mine:
        return mine[0]
    log.info("latency table %s holds no table for %s on %s yet: measuring one (its %d other tables are kept)",
             path, profile, describe_hardware(hardware), len(tables))
    return LatencyTable(profile, hardware, source=str(path))


def _measure_together(space, model: nn.Module, runner, todo: list[Probe], archs: list[Architecture],
                      precision: str, recipe: str, **timing) -> list[list[float]]:
    """The rounds of every layer graph in ``todo``, then of every architecture in ``archs``, the
    graphs written in ``precision`` (:func:`in_precision`).

    Layers and whole models are timed in the same shuffled rounds, so that a change in the
    machine's speed while they are measured affects both alike and the calibration absorbs it.
    """
    with tempfile.TemporaryDirectory(prefix="compressor-calib-") as tmp:
        probes = todo + (arch_probes(space, model, archs, runner, tmp) if archs else [])
        probes = in_precision(probes, precision, recipe, timing["batch"])
        return measure_probes(runner, probes, **timing) if probes else []


def _calibrate(lat: LatencyModel, archs: list[Architecture], ms: list[float], seed: int) -> dict:
    """Fit ``lat``'s calibration on ``archs`` measured at ``ms`` and store it in its table."""
    space, table, fp = lat.space, lat.table, lat.fingerprint
    feats = [lat.features(x) for x in archs]
    a, c, b = fit_calibration(feats, ms)
    rel = [abs(a * f0 + c * f1 + b - m) / m for (f0, f1), m in zip(feats, ms)]
    cal = {"fingerprint": dict(space.fingerprint), "a": a, "c_ms_per_mb": c, "b": b, "grid": lat.grid,
           "archs": len(archs), "seed": seed, "null_ms": table.ms(NULL_KEY), "max_rel_err": float(max(rel)),
           "mean_rel_err": float(np.mean(rel)),
           "points": [{"arch": arch_hash(x), "macs": int(space.macs(x)), "raw": f0, "weight_mb": f1,
                       "ms": float(m)} for x, (f0, f1), m in zip(archs, feats, ms)]}
    table.calibrations[fp] = cal
    log.info("calibration of %s: measured = %.3f * table + %.4f ms/MB * weights + %.3f ms (fit error mean %.1f%%, "
             "max %.1f%%)", fp, a, c, b, 100 * cal["mean_rel_err"], 100 * cal["max_rel_err"])
    return cal


def build_latency_model(space, model: nn.Module, profile, table_path: str | os.PathLike | None = None,
                        calibration_archs: int = 12, *, grid: int | None = None, rounds: int = 7, stat: str = "min",
                        warmup: int | None = None, runs: int | None = None, threads: int | None = None,
                        timed_by: str | None = None, clock: str = "wall", block: int | None = None, runner=None,
                        offline: bool = False, cache: bool = False, recalibrate: bool = False, seed: int = 0,
                        runtime: Runtime | None = None, precision: str | None = None) -> LatencyModel:
    """A calibrated latency model of ``space`` (built on ``model``) for ``profile``, in the
    ``precision`` the model ships in (default: the profile's).

    Reads ``table_path`` if it exists, measures the single-layer graphs its table for this profile
    and hardware lacks and, unless that table already holds one for this model (and
    ``recalibrate`` is false), calibrates on ``calibration_archs`` whole architectures; then
    merges the table into the file (:meth:`LatencyTable.save`). A file whose tables were all
    measured for other hardware or profiles is refused, unless ``cache`` (the automatic cache
    file, or ``compress lut``'s): then this hardware's table is measured and added. Every graph is
    timed in ``rounds`` shuffled passes of ``warmup`` + ``runs`` inferences (default: the profile's
    ``[measure]`` totals spread over the rounds; ``threads`` too) and the rounds' medians are
    reduced by ``stat`` (``"min"``: the quietest round, see ``table.summarize``). ``clock="cpu"``
    (onnxruntime-cpu, ``threads=1``) times by thread CPU time, robust on a shared machine.
    ``runner`` replaces the profile's runner (tests); ``timed_by`` names the inference runtime that
    times the graphs (default: the runner's, else :func:`~exporters.runtime_choice.choose_runtime`'s).
    ``runtime`` is the run's (or the command's) :class:`~compressor.runtime.Runtime`: the measuring
    shows a progress bar unless it is quiet, and none without one.

    ``grid`` is the number of table points per channel dimension (default 5; offline: the one
    the model was calibrated with).

    ``offline=True`` (a table measured on the target, used on another machine): nothing is
    measured; the table must have been made for this profile in this precision and hold every
    layer this model needs; its hardware is not compared with this machine's.

    Through onnxruntime, fp16 and int8 time every graph rewritten in that precision (int8 with the
    profile's ``quantization`` recipe); the table's hardware records the precision, so a table
    measured in one precision is never used for another.
    """
    t0 = time.perf_counter()
    precision = precision or profile.precision
    warmup, runs, threads = measure_settings(profile, warmup, runs, threads, rounds)
    if offline:
        if table_path is None:
            raise CompressError("an offline latency model needs a table: pass --latency-table FILE")
        tables = in_table_precision(tables_for(read_tables(table_path), profile.name, source=str(table_path)),
                                    precision, str(table_path))
        return offline_model(space, model, profile, tables, grid)
    grid = 5 if grid is None else grid
    timed_by = timed_by or getattr(runner, "runtime", None) or choose_runtime(profile)
    block = channel_block(timed_by, profile.channel_multiple) if block is None else block
    hardware = hardware_fingerprint(timed_by, threads, profile.batch, precision, clock, block)
    table = _table_to_extend(table_path, profile.name, hardware, cache)
    if runner is None:
        runner = make_runner(timed_by, threads, precision, clock=clock)
    layers, dims = trace_layers(space, model, profile.batch)
    fp = model_fingerprint(space, layers)
    lat = LatencyModel(space, layers, dims, table, grid, fingerprint=fp)
    todo = list({p.key: p for p in lat.probes() if p.key not in table.entries}.values())
    cal = table.calibrations.get(fp)
    archs: list[Architecture] = []
    if cal is None or recalibrate or int(cal.get("grid", -1)) != grid or todo:
        archs = calibration_architectures(space, calibration_archs, seed)
    if todo or archs:
        log.info("measuring %d single-layer graphs and %d whole architectures of %s on %s (%d rounds of %d runs)",
                 len(todo), len(archs), fp, describe_hardware(hardware), rounds, runs)
    graphs = precision if graph_precision(timed_by) else "fp32"  # TensorRT and torch are given fp32 graphs
    results = _measure_together(space, model, runner, todo, archs, graphs, profile.quantization,
                                batch=profile.batch, warmup=warmup, runs=runs, rounds=rounds, seed=seed,
                                runtime=runtime)
    for p, r in zip(todo, results):
        table.add(p.key, r, stat)
    if todo:
        table.settings = {"warmup": warmup, "runs": runs, "rounds": rounds, "stat": stat, "grid": grid}
    lat.compile()
    if archs:
        cal = _calibrate(lat, archs, [summarize(r, stat) for r in results[len(todo):]], seed)
    _apply(lat, cal)
    if table_path is not None and (todo or archs):
        table.save(table_path)
    log.info("latency model of %s on %s ready in %.1f s (%d graphs measured)", fp, describe_hardware(hardware),
             time.perf_counter() - t0, len(todo))
    return lat


def build_lut(model_name_or_module, profile, out_path: str | os.PathLike, input_shape=None, **kwargs) -> LatencyModel:
    """What ``compress lut --target X --model M --out FILE`` runs: measure (or extend) the table at
    ``out_path`` for one model and calibrate it there. ``profile`` is a Profile or a profile name."""
    from profiles import Profile, load_profile

    from ..models import resolve_model
    from ..space import SearchSpace

    if not isinstance(profile, Profile):
        profile = load_profile(str(profile))
    shape = tuple(int(s) for s in (input_shape or profile.input_shape))
    if isinstance(model_name_or_module, nn.Module):
        net, name = model_name_or_module.eval(), type(model_name_or_module).__name__
    else:
        net, _, _ = resolve_model(str(model_name_or_module), trust_code=True)  # named by the caller
        name = str(model_name_or_module)
    space = SearchSpace.build(net, shape, name, channel_multiple=profile.channel_multiple)
    return build_latency_model(space, net, profile, out_path, **kwargs)

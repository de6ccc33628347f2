"""Calibration of the latency predictor on whole-model measurements.

The sum of a model's single-layer table latencies misses what the runtime fuses or adds and the
cost of reading the weights from memory, so the predictor's coefficients are fitted on a few
whole architectures measured on the target:

* which architectures (:func:`calibration_architectures`: full, smallest, uniform half width,
  random ones) and their keys (:func:`arch_hash`; :func:`model_fingerprint` for the model);
* how they are timed (:func:`measure_architectures`: materialized, exported, timed in shuffled
  rounds like the table's layers);
* the fit (:func:`fit_calibration`, :func:`fit_affine`, on relative error;
  :func:`pooled_calibration` for a table that lacks this model's).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from ..architecture import Architecture
from ..runtime import Runtime
from .layers import LayerInstance
from .probes import Probe, in_precision, measure_probes
from .table import LatencyTable, graph_precision, summarize

__all__ = ["fit_affine", "fit_calibration", "pooled_calibration", "random_architecture", "calibration_architectures",
           "arch_hash", "model_fingerprint", "arch_probes", "measure_architectures"]


# ---------------------------------------------------------------------- fitting
def fit_affine(raw: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """``a, b`` minimising Σ ((a·raw + b − measured) / measured)², the relative error.

    With one point (or all raw sums equal) the fit is a ratio through the origin; a fit whose
    slope is not positive (nonsense from noise) falls back to that ratio too.
    """
    r = np.asarray(raw, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    if len(r) == 0:
        return 1.0, 0.0
    ratio = float(np.sum(m) / max(np.sum(r), 1e-12))
    if len(r) < 2 or np.ptp(r) <= 1e-12 * max(1.0, abs(r).max()):
        return ratio, 0.0
    w = 1.0 / m
    X = np.stack([r * w, w], axis=1)
    (a, b), *_ = np.linalg.lstsq(X, np.ones_like(m), rcond=None)
    if not np.isfinite(a) or a <= 0:
        return ratio, 0.0
    return float(a), float(b)


def _fit3(f: np.ndarray, m: np.ndarray) -> tuple[float, float, float] | None:
    w = 1.0 / m
    X = np.stack([f[:, 0] * w, f[:, 1] * w, w], axis=1)
    (a, c, b), *_ = np.linalg.lstsq(X, np.ones_like(m), rcond=None)
    if np.isfinite([a, c, b]).all() and a > 0 and c >= 0:
        return float(a), float(c), float(b)
    return None


def _fit(f: np.ndarray, m: np.ndarray, three: bool) -> tuple[float, float, float]:
    fitted = _fit3(f, m) if three else None
    if fitted is None:
        a, b = fit_affine(f[:, 0], m)
        return a, 0.0, b
    return fitted


def _loo_error(f: np.ndarray, m: np.ndarray, three: bool) -> float:
    """Mean relative error of leave-one-out predictions."""
    errs = []
    for k in range(len(m)):
        keep = np.arange(len(m)) != k
        a, c, b = _fit(f[keep], m[keep], three)
        errs.append(abs(a * f[k, 0] + c * f[k, 1] + b - m[k]) / m[k])
    return float(np.mean(errs))


def fit_calibration(features, measured) -> tuple[float, float, float]:
    """``a, c, b`` of ``measured ~ a * table + c * weight_mb + b``, on relative error.

    ``features[k] = (table, weight_mb)``: architecture k's summed table latency (ms) and the
    megabytes of its Conv/Linear weights. A single layer timed alone keeps its weights in cache
    from one run to the next; inside a whole model every layer's weights are read again from
    memory each inference (the model's weights, or the activations passing between its layers,
    exceed the cache), a cost in proportion to the weights that ``c`` (ms per MB, about
    1 / memory bandwidth) carries. The weight term is kept only when it predicts better: with at
    least 5 architectures, a fit with ``a > 0`` and ``c >= 0``, and a lower leave-one-out error
    than the affine fit (:func:`fit_affine`, ``c = 0``) on the same points.
    """
    f = np.asarray(features, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(measured, dtype=np.float64)
    if (len(m) >= 5 and np.ptp(f[:, 1]) > 0 and _fit3(f, m) is not None
            and _loo_error(f, m, True) < _loo_error(f, m, False)):
        return _fit(f, m, True)
    return _fit(f, m, False)



def pooled_calibration(table: LatencyTable) -> tuple[float, float, float] | None:
    """One fit over the calibration points of every model ``table`` holds (None if it holds none)."""
    feats, ms = [], []
    for cal in table.calibrations.values():
        for p in cal.get("points", []):
            feats.append((p["raw"], p.get("weight_mb", 0.0)))
            ms.append(p["ms"])
    return fit_calibration(feats, ms) if feats else None


# ---------------------------------------------------------------------- architectures
def random_architecture(space, rng: np.random.Generator, keep_prob: float = 0.5) -> Architecture:
    """Every decision group at a uniformly random choice; every block kept with ``keep_prob``."""
    widths = {g.name: int(rng.choice(g.choices)) for g in space.decision_groups}
    blocks = {b.name: bool(rng.random() < keep_prob) for b in space.blocks}
    return space.architecture(widths, blocks)


def calibration_architectures(space, n: int = 12, seed: int = 0) -> list[Architecture]:
    """``n`` distinct architectures: full, smallest, uniform half width, then random ones (widths
    uniform over the choices, blocks kept with probability 1/2), like those a search visits."""
    rng = np.random.default_rng(seed)
    out: list[Architecture] = []
    seen: set[str] = set()
    fixed = [space.full(), space.smallest(), space.uniform(0.5)]
    for k in range(40 * n + 40):
        if len(out) >= n:
            break
        arch = fixed[k] if k < len(fixed) else random_architecture(space, rng)
        if arch_hash(arch) not in seen:
            seen.add(arch_hash(arch))
            out.append(arch)
    return out


def arch_hash(arch: Architecture) -> str:
    data = json.dumps([sorted(arch.widths.items()), sorted(arch.blocks.items())])
    return hashlib.sha1(data.encode()).hexdigest()[:16]


def model_fingerprint(space, layers: Sequence[LayerInstance]) -> str:
    """Key of a model's calibration: name, input shape, and a hash of its layers, groups and blocks."""
    fp = space.fingerprint
    struct = {
        "fingerprint": {k: fp.get(k) for k in ("model", "input_shape", "num_classes", "channel_multiple", "min_ratio")},
        "layers": [[lay.name, lay.config.key(0, 0), lay.block] for lay in layers],
        "groups": [[g.name, g.channels, list(g.choices)] for g in space.groups],
        "blocks": [b.name for b in space.blocks],
    }
    digest = hashlib.sha1(json.dumps(struct, sort_keys=True).encode()).hexdigest()[:12]
    return f"{fp.get('model', 'model')}@{'x'.join(map(str, space.input_shape))}#{digest}"

# ---------------------------------------------------------------------- measuring whole models
def arch_probes(space, model: nn.Module, archs: Sequence[Architecture], runner,
                folder: str | os.PathLike) -> list[Probe]:
    """One probe per architecture: materialized and exported to ``folder`` (torch runtimes keep the module)."""
    from exporters.onnx_export import export_onnx

    from ..surgery import materialize

    use_module = getattr(runner, "runtime", "").startswith("torch-")
    probes = []
    for k, arch in enumerate(archs):
        small = materialize(space, model, arch)
        if use_module:
            probes.append(Probe(f"arch {arch_hash(arch)}", tuple(space.input_shape), lambda p: p, lambda m=small: m))
        else:
            path = export_onnx(small, space.input_shape, Path(folder) / f"arch{k}.onnx")
            probes.append(Probe(f"arch {arch_hash(arch)}", tuple(space.input_shape), lambda p, path=path: path))
        del small
    return probes


def measure_architectures(space, model: nn.Module, archs: Sequence[Architecture], runner, *, batch: int = 1,
                          warmup: int = 10, runs: int = 50, rounds: int = 5, seed: int = 0, stat: str = "min",
                          runtime: Runtime | None = None, precision: str = "fp32",
                          recipe: str = "onnxruntime") -> list[float]:
    """Latency (ms) of each architecture: materialized, exported (in ``precision`` where the runner
    times the graph's own, see :func:`.probes.in_precision`), timed in shuffled rounds, reduced by ``stat``
    (a progress bar where ``runtime`` is not quiet)."""
    with tempfile.TemporaryDirectory(prefix="compressor-calib-") as tmp:
        probes = arch_probes(space, model, archs, runner, tmp)
        if graph_precision(getattr(runner, "runtime", "")):
            probes = in_precision(probes, precision, recipe, batch)
        results = measure_probes(runner, probes, batch=batch, warmup=warmup, runs=runs, rounds=rounds, seed=seed,
                                 runtime=runtime, desc="whole models")
    return [summarize(r, stat) for r in results]

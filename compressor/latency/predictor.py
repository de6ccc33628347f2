"""Latency predictor: a per-layer lookup table measured on the target, calibrated on whole models.

``predict(arch) = a * Σ_layers LUT(C_in, C_out) + c * weight_MB + b`` over the layer calls
outside dropped blocks.

* **LUT**: for every Conv2d/Linear call of the model, latency measured on the target for a grid of
  (C_in, C_out) spanning the channel counts the space can reach (about ``grid`` values per
  dimension from the smallest to the full width, inner ones multiples of the hardware's channel
  block), minus the runtime's fixed cost of one call. Runtimes pad channels to their vector block
  (onnxruntime's NCHWc layout: 16 floats with AVX-512), so latency is a staircase in channels:
  a channel count is rounded up to the block, then the table is interpolated bilinearly in
  (C_in, C_out) (depthwise layers: linearly in their one channel count). The channel counts of
  an architecture come from :class:`~compressor.latency.layers.DimTable`, exact for every coupling.
* **Calibration**: runtimes fuse layers and add work the table does not see (activations,
  additions, pooling, layout changes), and a layer timed alone has its weights in cache while a
  whole model reads them from memory, so the raw sum is biased. ``a``, ``c`` and ``b`` are
  fitted on whole-model measurements of a few architectures (full, smallest, uniform widths,
  random ones) by least squares on the *relative* error (see :func:`fit_calibration`), and
  stored in the table per model fingerprint. Layers and whole models are timed in the same
  shuffled rounds. A table given for prediction only (built on another machine) that lacks this
  model's calibration uses a pooled fit of every calibration it holds (a warning says so).

:meth:`LatencyModel.expected` is the same expression under width distributions (TAS): E[C_in],
E[C_out] from the softmax, the LUT at those expectations (rounded up to the block with a
straight-through gradient), ``c`` times E[C_in]·E[C_out]'s weight MB, each times the keep
probability of the layer's block, summed, plus ``b``; it equals ``predict`` at one-hot
probabilities.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..architecture import Architecture
from ..costs import Metric
from ..errors import CompressError
from .layers import DimTable, LayerInstance, effective_channels, grid_points, trace_layers
from .table import (
    NULL_KEY,
    LatencyTable,
    Probe,
    channel_block,
    choose_runtime,
    describe_hardware,
    hardware_fingerprint,
    layer_probe,
    make_runner,
    measure_probes,
    null_probe,
    parse_tables,
    read_tables,
    summarize,
    tables_for,
)

log = logging.getLogger(__name__)

__all__ = ["LatencyModel", "ExpectedLatency", "build_latency_model", "evaluate_predictor", "build_lut",
           "fit_affine", "fit_calibration", "random_architecture", "calibration_architectures",
           "measure_architectures", "model_fingerprint"]


# ---------------------------------------------------------------------- interpolation
def _locate_np(grid: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: index i of the grid cell holding x (grid[i] <= x <= grid[i+1]) and the fraction t.

    Rows of ``grid`` are non-decreasing, padded at the end by repeating their last value; x is
    clamped to the row's range.
    """
    x = np.clip(x, grid[:, 0], grid[:, -1])
    idx = (grid[:, 1:-1] <= x[:, None]).sum(1)
    rows = np.arange(len(grid))
    lo, hi = grid[rows, idx], grid[rows, idx + 1]
    span = hi - lo
    t = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0)
    return idx, t


def bilinear_np(gin: np.ndarray, gout: np.ndarray, vals: np.ndarray, cin: np.ndarray, cout: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``vals[k, i, o]`` (on grids ``gin[k]`` x ``gout[k]``) at (cin[k], cout[k])."""
    i, ti = _locate_np(gin, cin)
    o, to = _locate_np(gout, cout)
    r = np.arange(len(vals))
    return ((1 - ti) * (1 - to) * vals[r, i, o] + ti * (1 - to) * vals[r, i + 1, o]
            + (1 - ti) * to * vals[r, i, o + 1] + ti * to * vals[r, i + 1, o + 1])


def _locate_t(grid: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.minimum(torch.maximum(x, grid[:, 0]), grid[:, -1])
    with torch.no_grad():
        idx = (grid[:, 1:-1] <= x[:, None]).sum(1)
    lo = grid.gather(1, idx[:, None]).squeeze(1)
    hi = grid.gather(1, (idx + 1)[:, None]).squeeze(1)
    span = hi - lo
    t = torch.where(span > 0, (x - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(x))
    return idx, t


def bilinear_torch(gin, gout, vals, cin, cout) -> torch.Tensor:
    """:func:`bilinear_np` in torch, differentiable in ``cin`` and ``cout``."""
    i, ti = _locate_t(gin, cin)
    o, to = _locate_t(gout, cout)
    r = torch.arange(len(vals), device=vals.device)
    return ((1 - ti) * (1 - to) * vals[r, i, o] + ti * (1 - to) * vals[r, i + 1, o]
            + (1 - ti) * to * vals[r, i, o + 1] + ti * to * vals[r, i + 1, o + 1])


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
    if len(m) >= 5 and np.ptp(f[:, 1]) > 0 and _fit3(f, m) is not None:
        if _loo_error(f, m, True) < _loo_error(f, m, False):
            return _fit(f, m, True)
    return _fit(f, m, False)


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


# ---------------------------------------------------------------------- the model
class LatencyModel(Metric):
    """Predicted latency (ms) of any architecture of one space on one target (see the module docstring):
    the ``latency_ms`` :class:`~compressor.costs.Metric`."""

    name = "latency_ms"

    def __init__(self, space, layers: list[LayerInstance], dims: DimTable, table: LatencyTable,
                 grid: int = 5, a: float = 1.0, b: float = 0.0, fingerprint: str = "", c: float = 0.0):
        self.space = space
        self.layers = layers
        self.dims = dims
        self.table = table
        self.grid = grid
        self.block = int(table.hardware.get("channel_block", 1))
        self.a, self.b = float(a), float(b)
        self.c = float(c)  # ms per MB of weights (see ``fit_calibration``)
        self.fingerprint = fingerprint
        lo = dims.dims(dims.min_widths)
        hi = dims.dims(dims.full_widths)
        self.grids: list[tuple[list[int], list[int]]] = []
        for lay in layers:
            step = int(np.lcm(self.block, lay.config.groups)) if lay.config.op == "conv" else self.block
            axes = []
            for d in (lay.dim_in, lay.dim_out):
                start = effective_channels(lo[d], lo[d], hi[d], step)
                axes.append(grid_points(float(start), hi[d], grid, step))
            self.grids.append((axes[0], axes[1]))
        self._compiled = False

    # ------------------------------------------------------------------ the table's side
    def probes(self) -> list[Probe]:
        """Every single-layer graph the model needs, deduplicated, plus the runtime's null graph."""
        found: dict[str, Probe] = {NULL_KEY: null_probe()}
        for lay, (gi, go) in zip(self.layers, self.grids):
            for ci in gi:
                for co in go:
                    key = lay.config.key(ci, co)
                    if key not in found:
                        found[key] = layer_probe(lay.config, ci, co)
        return list(found.values())

    def keys(self) -> list[str]:
        return [p.key for p in self.probes()]

    def compile(self) -> "LatencyModel":
        """Gather the table's values into padded arrays (call after the table holds every key)."""
        missing = self.table.missing(self.keys())
        if missing:
            raise CompressError(f"latency table {self.table.source or '(in memory)'} lacks {len(missing)} layer "
                                f"measurements, e.g. '{missing[0]}': build it with `compress lut --target "
                                f"{self.table.profile}` on the target")
        null = self.table.ms(NULL_KEY)
        n = len(self.layers)
        G = max([max(len(gi), len(go)) for gi, go in self.grids] + [2])
        gin, gout, vals = np.zeros((n, G)), np.zeros((n, G)), np.zeros((n, G, G))
        for k, (lay, (gi, go)) in enumerate(zip(self.layers, self.grids)):
            v = np.array([[self.table.ms(lay.config.key(ci, co)) for co in go] for ci in gi]) - null
            gin[k] = np.pad(gi, (0, G - len(gi)), mode="edge")
            gout[k] = np.pad(go, (0, G - len(go)), mode="edge")
            vals[k] = np.pad(np.maximum(v, 0.0), ((0, G - len(gi)), (0, G - len(go))), mode="edge")
        self._gin, self._gout, self._vals = gin, gout, vals
        self._din = np.asarray([lay.dim_in for lay in self.layers], dtype=np.int64)
        self._dout = np.asarray([lay.dim_out for lay in self.layers], dtype=np.int64)
        self._block = np.asarray([lay.block for lay in self.layers], dtype=np.int64)
        self._inside = np.flatnonzero(self._block >= 0)
        # weight MB of a layer = coef * C_in * C_out (a depthwise layer's C_in is the constant 1)
        self._wcoef = np.asarray([4e-6 * lay.config.kernel[0] * lay.config.kernel[1] / lay.config.groups
                                  for lay in self.layers])
        self._compiled = True
        return self

    # ------------------------------------------------------------------ prediction
    def _parts(self, widths: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per layer call: uncalibrated table latency (ms) and weight MB, both 0 inside dropped blocks."""
        d = self.dims.dims(np.asarray(widths, dtype=np.int64))
        cin, cout = d[self._din], d[self._dout]
        v = bilinear_np(self._gin, self._gout, self._vals,
                        effective_channels(cin, self._gin[:, 0], self._gin[:, -1], self.block),
                        effective_channels(cout, self._gout[:, 0], self._gout[:, -1], self.block))
        w = self._wcoef * cin * cout
        if len(self._inside):
            alive = np.asarray(kept, dtype=bool)[self._block[self._inside]]
            v[self._inside] *= alive
            w[self._inside] *= alive
        return v, w

    def layer_ms(self, widths: np.ndarray, kept: np.ndarray) -> np.ndarray:
        """Uncalibrated latency of every layer call (0 inside dropped blocks), in ms."""
        return self._parts(widths, kept)[0]

    def features(self, arch: Architecture) -> tuple[float, float]:
        """(table ms, weight MB) of ``arch``: what the calibration is fitted on."""
        v, w = self._parts(*self.space.encode(arch))
        return float(v.sum()), float(w.sum())

    def raw(self, arch: Architecture) -> float:
        """Σ of the layers' table latencies (before calibration), in ms."""
        return self.features(arch)[0]

    def predict_encoded(self, widths: np.ndarray, kept: np.ndarray) -> float:
        """Predicted latency (ms) from ``space.encode(arch)``."""
        v, w = self._parts(widths, kept)
        return self.a * float(v.sum()) + self.c * float(w.sum()) + self.b

    def predict(self, arch: Architecture) -> float:
        """Predicted latency of ``arch`` on the target, in ms."""
        return self.predict_encoded(*self.space.encode(arch))

    value_encoded = predict_encoded

    def rescaled(self, factor: float) -> "LatencyModel":
        """A new model whose every prediction is this one's times ``factor`` (a measured/predicted
        ratio seen on the target); this one is left as it is."""
        return self.with_coefficients([self.a * factor, self.b * factor, self.c * factor])

    def coefficients(self) -> list[float]:
        """The calibration ``[a, b, c]`` (ms = a·table ms + c·weight MB + b), e.g. to save a search's state."""
        return [self.a, self.b, self.c]

    def with_coefficients(self, coefficients) -> "LatencyModel":
        """A new model with the calibration ``coefficients`` (as :meth:`coefficients` returns them);
        it shares this one's table and layers."""
        other = copy.copy(self)
        other.__dict__.pop("_expected_cache", None)  # expectations read their model's coefficients
        other.a, other.b, other.c = (float(v) for v in coefficients)
        return other

    def details(self, arch: Architecture) -> list[dict]:
        """Per layer call: name, C_in, C_out, uncalibrated ms (a debugging view)."""
        widths, kept = self.space.encode(arch)
        d = self.dims.dims(widths)
        ms = self.layer_ms(widths, kept)
        rows = []
        for lay, v in zip(self.layers, ms):
            cin = d[lay.dim_out if lay.config.op == "dwconv" else lay.dim_in]
            rows.append({"layer": lay.name, "op": lay.config.op, "c_in": int(cin), "c_out": int(d[lay.dim_out]),
                         "block": lay.block, "ms": float(v)})
        return rows

    # ------------------------------------------------------------------ expectations (TAS)
    def expectation(self, slot_groups: Sequence[int], candidates: Sequence[Sequence[int]],
                    device=None) -> "ExpectedLatency":
        """Expected latency with ``ExpectedCost``'s conventions (padded ``(n_slots, K)`` probabilities)."""
        return ExpectedLatency(self, slot_groups, candidates, device)

    def expected(self, width_probs: Sequence, keep_probs=None, candidates: Sequence | None = None) -> torch.Tensor:
        """Expected latency (ms, differentiable float64 scalar), arguments as ``expected_macs``.

        ``width_probs[i]``: probabilities over the candidate widths of ``space.groups[i]`` (None:
        full width); ``candidates[i]``: those widths (default the group's choices);
        ``keep_probs``: probability each block of ``space.blocks`` is kept (default 1).
        """
        groups = self.space.groups
        if len(width_probs) != len(groups):
            raise ValueError(f"need one entry per group of the space ({len(groups)}), got {len(width_probs)}")
        slots, cands, rows = [], [], []
        for i, p in enumerate(width_probs):
            if p is None:
                continue
            c = candidates[i] if candidates is not None and candidates[i] is not None else groups[i].choices
            p = torch.as_tensor(p)
            if p.shape != (len(c),):
                raise ValueError(f"group {groups[i].name}: {len(c)} candidate widths but probabilities of shape "
                                 f"{tuple(p.shape)}")
            slots.append(i)
            cands.append(tuple(int(w) for w in c))
            rows.append(p)
        key = (tuple(slots), tuple(cands), str(rows[0].device) if rows else "cpu")
        cache = self.__dict__.setdefault("_expected_cache", {})
        if key not in cache:
            cache.clear()
            cache[key] = ExpectedLatency(self, slots, cands, rows[0].device if rows else None)
        width = max([len(c) for c in cands], default=1)
        probs = (torch.stack([F.pad(r.to(torch.float64), (0, width - len(r))) for r in rows]) if rows
                 else torch.zeros(0, width, dtype=torch.float64))
        return cache[key](probs, keep_probs)

    # ------------------------------------------------------------------ files
    def calibration(self) -> dict:
        return dict(self.table.calibrations.get(self.fingerprint, {}))

    def to_dict(self) -> dict:
        """A latency table file holding only what this model uses, and its calibration."""
        keys = set(self.keys())
        sub = LatencyTable(self.table.profile, dict(self.table.hardware),
                           {k: v for k, v in self.table.entries.items() if k in keys},
                           {self.fingerprint: self.calibration() or {"a": self.a, "c_ms_per_mb": self.c,
                                                                     "b": self.b, "grid": self.grid}},
                           dict(self.table.settings))
        return sub.to_dict()

    @classmethod
    def from_dict(cls, data: dict, space, model: nn.Module, profile, source: str = "latency table") -> "LatencyModel":
        """Rebuild from :meth:`to_dict` (or any table file); no measurement happens."""
        tables = tables_for(parse_tables(data, source), profile.name, source=source)
        return _offline_model(space, model, profile, tables, grid=None)


class ExpectedLatency:
    """Differentiable expected latency, like :class:`~compressor.costs.ExpectedCost`.

    ``slot_groups[s]`` is the group (index into ``space.groups``) whose width slot ``s`` decides
    among ``candidates[s]``; call with a ``(n_slots, K)`` probability matrix (zero padded) and the
    keep probability of every block.
    """

    def __init__(self, lat: LatencyModel, slot_groups: Sequence[int], candidates: Sequence[Sequence[int]],
                 device=None):
        if not lat._compiled:
            lat.compile()
        dev = torch.device(device) if device is not None else torch.device("cpu")
        f64 = dict(dtype=torch.float64, device=dev)
        self.lat = lat  # its a, b, c are read at each call
        self.block = lat.block
        self._wcoef = torch.as_tensor(lat._wcoef, **f64)
        self.n_blocks = len(lat.space.blocks)
        self._dims = lat.dims.expected_dims(list(slot_groups), [list(c) for c in candidates], dev)
        self._gin = torch.as_tensor(lat._gin, **f64)
        self._gout = torch.as_tensor(lat._gout, **f64)
        self._vals = torch.as_tensor(lat._vals, **f64)
        self._din = torch.as_tensor(lat._din, device=dev)
        self._dout = torch.as_tensor(lat._dout, device=dev)
        self._inside = torch.as_tensor(lat._inside, device=dev)
        self._block = torch.as_tensor(lat._block[lat._inside], device=dev)

    def layer_costs(self, probs: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Calibrated expected latency of every layer call (``a`` * table + ``c`` * weight MB), without ``b``."""
        d = self._dims(probs)
        cin, cout = d[self._din], d[self._dout]
        v = self.lat.a * bilinear_torch(self._gin, self._gout, self._vals, self._effective(cin), self._effective(cout))
        if self.lat.c:
            v = v + self.lat.c * self._wcoef * cin * cout
        if len(self._inside) and keep is not None:
            keep = torch.as_tensor(keep).to(v.device, torch.float64)
            if keep.shape != (self.n_blocks,):
                raise ValueError(f"keep probabilities must have shape ({self.n_blocks},), got {tuple(keep.shape)}")
            alive = torch.ones_like(v).index_put((self._inside,), keep[self._block])
            v = v * alive
        return v

    def _effective(self, c: torch.Tensor) -> torch.Tensor:
        """Channels rounded up to the hardware block, with a straight-through gradient: the value is
        the staircase ``predict`` uses, the gradient that of the unrounded interpolation."""
        if self.block <= 1:
            return c
        up = torch.ceil(c / self.block - 1e-9) * self.block
        return c + (up - c).detach()

    def __call__(self, probs: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Expected latency in ms (float64 scalar tensor)."""
        return self.layer_costs(probs, keep).sum() + self.lat.b

    latency = __call__


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
                          quiet: bool = True) -> list[float]:
    """Latency (ms) of each architecture: materialized, exported, timed in shuffled rounds, reduced by ``stat``."""
    with tempfile.TemporaryDirectory(prefix="compressor-calib-") as tmp:
        probes = arch_probes(space, model, archs, runner, tmp)
        results = measure_probes(runner, probes, batch=batch, warmup=warmup, runs=runs, rounds=rounds, seed=seed,
                                 quiet=quiet, desc="whole models")
    return [summarize(r, stat) for r in results]


# ---------------------------------------------------------------------- building
def _settings(profile, warmup, runs, threads, rounds):
    """Per-round warm-up and timed runs (the profile's totals spread over the rounds), and threads."""
    m = profile.measure
    warmup = max(3, -(-m.warmup // rounds)) if warmup is None else warmup
    runs = max(5, -(-m.runs // rounds)) if runs is None else runs
    return warmup, runs, m.threads if threads is None else threads


def _pooled(table: LatencyTable) -> tuple[float, float, float] | None:
    feats, ms = [], []
    for cal in table.calibrations.values():
        for p in cal.get("points", []):
            feats.append((p["raw"], p.get("weight_mb", 0.0)))
            ms.append(p["ms"])
    return fit_calibration(feats, ms) if feats else None


def _apply(lat: LatencyModel, cal: dict) -> None:
    lat.a, lat.b = float(cal["a"]), float(cal["b"])
    lat.c = float(cal.get("c_ms_per_mb", 0.0))


def _table_grid(table: LatencyTable, fp: str, grid: int | None) -> int:
    """``grid``, else the one ``fp`` was calibrated with, else the table's."""
    if grid is not None:
        return grid
    cal = table.calibrations.get(fp)
    return int(cal["grid"]) if cal and "grid" in cal else int(table.settings.get("grid", 5))


def _offline_model(space, model, profile, tables: Sequence[LatencyTable], grid: int | None) -> LatencyModel:
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
        pooled = _pooled(table)
        lat.a, lat.c, lat.b = pooled if pooled else (1.0, 0.0, 0.0)
        log.warning("latency table %s holds no calibration for %s: using %s (a=%.3g, b=%.3g ms); predictions may be "
                    "off by a constant factor", table.source, fp,
                    "the pooled fit of its other models" if pooled else "the raw sum of layers", lat.a, lat.b)
    return lat


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


def build_latency_model(space, model: nn.Module, profile, table_path: str | os.PathLike | None = None,
                        calibration_archs: int = 12, *, grid: int | None = None, rounds: int = 7, stat: str = "min",
                        warmup: int | None = None, runs: int | None = None, threads: int | None = None,
                        runtime: str | None = None, clock: str = "wall", block: int | None = None, runner=None,
                        offline: bool = False, cache: bool = False, recalibrate: bool = False, seed: int = 0,
                        quiet: bool = False) -> LatencyModel:
    """A calibrated latency model of ``space`` (built on ``model``) for ``profile``.

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
    ``runner`` replaces the profile's runner (tests).

    ``grid`` is the number of table points per channel dimension (default 5; offline: the one
    the model was calibrated with).

    ``offline=True`` (a table measured on the target, used on another machine): nothing is
    measured; the table must have been made for this profile and hold every layer this model
    needs; its hardware is not compared with this machine's.
    """
    t0 = time.perf_counter()
    warmup, runs, threads = _settings(profile, warmup, runs, threads, rounds)
    if offline:
        if table_path is None:
            raise CompressError("an offline latency model needs a table: pass --latency-table FILE")
        tables = tables_for(read_tables(table_path), profile.name, source=str(table_path))
        return _offline_model(space, model, profile, tables, grid)
    grid = 5 if grid is None else grid
    if runtime is None:
        runtime = getattr(runner, "runtime", None) or choose_runtime(profile)
    block = channel_block(runtime, profile.channel_multiple) if block is None else block
    hardware = hardware_fingerprint(runtime, threads, profile.batch, profile.precision, clock, block)
    table = _table_to_extend(table_path, profile.name, hardware, cache)
    if runner is None:
        runner = make_runner(runtime, threads, profile.precision, clock)
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
    # layers and whole models are timed in the same shuffled rounds, so that a change in the
    # machine's speed while they are measured affects both alike and the calibration absorbs it
    with tempfile.TemporaryDirectory(prefix="compressor-calib-") as tmp:
        probes = todo + (arch_probes(space, model, archs, runner, tmp) if archs else [])
        results = measure_probes(runner, probes, batch=profile.batch, warmup=warmup, runs=runs, rounds=rounds,
                                 seed=seed, quiet=quiet) if probes else []
    for p, r in zip(todo, results):
        table.add(p.key, r, stat)
    if todo:
        table.settings = {"warmup": warmup, "runs": runs, "rounds": rounds, "stat": stat, "grid": grid}
    lat.compile()
    if archs:
        ms = [summarize(r, stat) for r in results[len(todo):]]
        feats = [lat.features(x) for x in archs]
        a, c, b = fit_calibration(feats, ms)
        rel = [abs(a * f0 + c * f1 + b - m) / m for (f0, f1), m in zip(feats, ms)]
        cal = {"fingerprint": dict(space.fingerprint), "a": a, "c_ms_per_mb": c, "b": b, "grid": grid,
               "archs": len(archs), "seed": seed, "null_ms": table.ms(NULL_KEY), "max_rel_err": float(max(rel)),
               "mean_rel_err": float(np.mean(rel)),
               "points": [{"arch": arch_hash(x), "macs": int(space.macs(x)), "raw": f0, "weight_mb": f1,
                           "ms": float(m)} for x, (f0, f1), m in zip(archs, feats, ms)]}
        table.calibrations[fp] = cal
        log.info("calibration of %s: measured = %.3f * table + %.4f ms/MB * weights + %.3f ms (fit error mean %.1f%%, "
                 "max %.1f%%)", fp, a, c, b, 100 * cal["mean_rel_err"], 100 * cal["max_rel_err"])
    _apply(lat, cal)
    if table_path is not None and (todo or archs):
        table.save(table_path)
    log.info("latency model of %s on %s ready in %.1f s (%d graphs measured)", fp, describe_hardware(hardware),
             time.perf_counter() - t0, len(todo))
    return lat


def _errors(predicted, measured) -> dict:
    rel = np.abs(np.asarray(predicted) - np.asarray(measured)) / np.asarray(measured)
    return {"within_10pct": float(np.mean(rel <= 0.10)), "mean_abs_rel_err": float(rel.mean()),
            "max_abs_rel_err": float(rel.max()), "spearman": spearman(predicted, measured)}


def evaluate_predictor(lat: LatencyModel, space, model: nn.Module, profile, n: int = 20, seed: int = 1, *,
                       rounds: int | None = None, stat: str | None = None, warmup: int | None = None,
                       runs: int | None = None, threads: int | None = None, runner=None, keep_prob: float = 0.5,
                       reference: bool = True, quiet: bool = True) -> dict:
    """Measured vs predicted latency on ``n`` random architectures the calibration did not use.

    Measurement settings default to those the table was measured with (its ``settings``).
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
    warmup, runs, threads = _settings(profile, warmup, runs, threads, rounds)
    if runner is None:
        runner = make_runner(lat.table.hardware["runtime"], threads, profile.precision,
                             lat.table.hardware.get("clock", "wall"))
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
                               rounds=rounds, seed=seed, stat=stat, quiet=quiet)
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

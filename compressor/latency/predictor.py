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
  random ones) by least squares on the *relative* error (see :mod:`.calibration`), and
  stored in the table per model fingerprint. Layers and whole models are timed in the same
  shuffled rounds. A table given for prediction only (built on another machine) that lacks this
  model's calibration uses a pooled fit of every calibration it holds (a warning says so).

:meth:`LatencyModel.expected` is the same expression under width distributions (TAS): E[C_in],
E[C_out] from the softmax, the LUT at those expectations (rounded up to the block with a
straight-through gradient), ``c`` times E[C_in]·E[C_out]'s weight MB, each times the keep
probability of the layer's block, summed, plus ``b``; it equals ``predict`` at one-hot
probabilities.

This module holds :class:`LatencyModel` and :class:`ExpectedLatency`; :mod:`.build` makes one
(measuring and calibrating, or from a stored table), :mod:`.evaluate` checks one on the target.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compress_base.errors import CompressError

from ..architecture import Architecture
from ..costs import Metric
from .layers import DimTable, LayerInstance, effective_channels, grid_points
from .probes import NULL_KEY, Probe, layer_probe, null_probe
from .table import LatencyTable, parse_tables, tables_for

__all__ = ["LatencyModel", "ExpectedLatency", "bilinear_np", "bilinear_torch"]


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

    def compile(self) -> LatencyModel:
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

    def rescaled(self, factor: float) -> LatencyModel:
        """A new model whose every prediction is this one's times ``factor`` (a measured/predicted
        ratio seen on the target); this one is left as it is."""
        return self.with_coefficients([self.a * factor, self.b * factor, self.c * factor])

    def coefficients(self) -> list[float]:
        """The calibration ``[a, b, c]`` (ms = a·table ms + c·weight MB + b), e.g. to save a search's state."""
        return [self.a, self.b, self.c]

    def with_coefficients(self, coefficients) -> LatencyModel:
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
                    device=None) -> ExpectedLatency:
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
    def from_dict(cls, data: dict, space, model: nn.Module, profile, source: str = "latency table") -> LatencyModel:
        """Rebuild from :meth:`to_dict` (or any table file); no measurement happens."""
        from .build import offline_model  # .build imports this module

        tables = tables_for(parse_tables(data, source), profile.name, source=source)
        return offline_model(space, model, profile, tables, grid=None)


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

"""The Conv2d/Linear layers of a search space, as the latency table sees them.

Every call of a Conv2d or Linear layer in the traced forward pass is one *layer instance*: a
:class:`LayerConfig` (operator, kernel, stride, padding, dilation, groups, input H x W or rows,
batch) that does not change with the architecture, plus the two channel counts that do, C_in
and C_out. Like :mod:`compressor.costs`, a channel count is a *dim*: a constant part plus, for
each channel group it follows, the number of that group's channels kept at the group's width
(a lookup table per coupling, exact after splits and flattens). :class:`DimTable` evaluates
every dim of every instance for an architecture in a few vectorised numpy operations, and its
expectation under width distributions as a differentiable torch expression.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["LayerConfig", "LayerInstance", "DimTable", "trace_layers", "grid_points", "effective_channels"]


@dataclass(frozen=True)
class LayerConfig:
    """What fixes a layer's latency apart from its channel counts.

    ``op`` is ``"conv"``, ``"dwconv"`` (depthwise: C_in = C_out = groups, so one channel
    count) or ``"linear"``. For a linear layer ``in_hw`` is ``(rows, 1)``: the rows a call
    multiplies (1 after a flatten). ``pads`` is (top, left, bottom, right).
    """

    op: str
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    in_hw: tuple[int, int] = (1, 1)
    batch: int = 1

    def key(self, cin: int, cout: int) -> str:
        """The cache key of this layer at ``cin`` x ``cout`` channels (model-independent)."""
        if self.op == "linear":
            return f"linear rows{self.in_hw[0]} b{self.batch} c{cin}x{cout}"
        geo = (f"k{self.kernel[0]}x{self.kernel[1]} s{self.stride[0]}x{self.stride[1]} "
               f"p{'x'.join(map(str, self.pads))} d{self.dilation[0]}x{self.dilation[1]} "
               f"in{self.in_hw[0]}x{self.in_hw[1]} b{self.batch}")
        if self.op == "dwconv":
            return f"dwconv {geo} c{cout}"
        return f"conv {geo} g{self.groups} c{cin}x{cout}"

    def channels(self, cin: int, cout: int) -> tuple[int, int]:
        """The (C_in, C_out) of the measured graph (a depthwise layer has C_in = C_out)."""
        return (cout, cout) if self.op == "dwconv" else (cin, cout)

    def input_shape(self, cin: int) -> tuple[int, ...]:
        """The graph's input shape without batch."""
        if self.op == "linear":
            return (cin,) if self.in_hw[0] == 1 else (self.in_hw[0], cin)
        return (cin, *self.in_hw)


@dataclass
class LayerInstance:
    """One call of one layer: its config, dims of C_in / C_out, enclosing block (-1: none)."""

    name: str
    config: LayerConfig
    dim_in: int
    dim_out: int
    block: int


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_pads(m: nn.Conv2d) -> tuple[int, int, int, int]:
    k, d = _pair(m.kernel_size), _pair(m.dilation)
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return (0, 0, 0, 0)
        total = [d[i] * (k[i] - 1) for i in range(2)]  # "same": PyTorch puts the odd pixel last
        return (total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2)
    p = _pair(m.padding)
    return (p[0], p[1], p[0], p[1])


class DimTable:
    """Channel counts of layer dims as functions of group widths (see the module docstring)."""

    def __init__(self, space):
        self.groups = space.groups
        self.couplings = space.couplings
        self.full_widths = np.asarray([g.channels for g in space.groups], dtype=np.int64)
        self.min_widths = np.asarray([g.choices[0] for g in space.groups], dtype=np.int64)
        self._rank_pos = []
        for g in space.groups:
            pos = np.empty(g.channels, dtype=np.int64)
            pos[g.ranking] = np.arange(g.channels)
            self._rank_pos.append(pos)
        self.const: list[float] = []
        self._entries: list[tuple[int, int, np.ndarray]] = []
        self._memo: dict[tuple, int] = {}

    def add(self, key: tuple[str, str], size: int) -> int:
        """Index of the dim of layer dimension ``key`` = (layer name, "in"/"out") of ``size``."""
        if key in self._memo:
            return self._memo[key]
        d = len(self.const)
        coupled = 0
        for c in self.couplings.get(key, []):
            g = self.groups[c.group]
            hist = np.bincount(self._rank_pos[c.group][c.root_idxs], minlength=g.channels)
            self._entries.append((d, c.group, np.concatenate([[0], np.cumsum(hist)])))
            coupled += len(c.idxs)
        self.const.append(float(size - coupled))
        self._memo[key] = d
        return d

    def finish(self) -> None:
        width = max([len(t) for _, _, t in self._entries], default=1)
        self.entry_table = np.zeros((len(self._entries), width))
        for i, (_, _, t) in enumerate(self._entries):
            self.entry_table[i, : len(t)] = t
        self.entry_dim = np.asarray([d for d, _, _ in self._entries], dtype=np.int64)
        self.entry_group = np.asarray([g for _, g, _ in self._entries], dtype=np.int64)
        self.dim_const = np.asarray(self.const, dtype=np.float64)
        self._rows = np.arange(len(self._entries))

    def dims(self, widths: np.ndarray) -> np.ndarray:
        """Size of every dim at the given width of every group."""
        add = self.entry_table[self._rows, widths[self.entry_group]] if len(self._rows) else np.zeros(0)
        return self.dim_const + np.bincount(self.entry_dim, weights=add, minlength=len(self.dim_const))

    def expected_dims(self, slot_groups: Sequence[int], candidates: Sequence[Sequence[int]], device=None):
        """A function ``probs (n_slots, K) -> expected size of every dim`` (torch, float64).

        ``slot_groups[s]`` is the group slot ``s`` decides among ``candidates[s]``; every other
        group stays at its full width.
        """
        slot_of = np.full(len(self.groups), -1, dtype=np.int64)
        for s, g in enumerate(slot_groups):
            slot_of[g] = s
        width = max([len(c) for c in candidates], default=1)
        entry_slot = slot_of[self.entry_group] if len(self._rows) else np.zeros(0, dtype=np.int64)
        fixed = entry_slot < 0
        const = self.dim_const.copy()
        if fixed.any():
            rows = np.flatnonzero(fixed)
            add = self.entry_table[rows, self.full_widths[self.entry_group[rows]]]
            const += np.bincount(self.entry_dim[rows], weights=add, minlength=len(const))
        var = np.flatnonzero(~fixed)
        table = np.zeros((len(var), width))
        for k, e in enumerate(var):
            cands = np.asarray(candidates[entry_slot[e]], dtype=np.int64)
            table[k, : len(cands)] = self.entry_table[e, cands]
        dev = torch.device(device) if device is not None else torch.device("cpu")
        t_const = torch.as_tensor(const, dtype=torch.float64, device=dev)
        t_dim = torch.as_tensor(self.entry_dim[var], dtype=torch.long, device=dev)
        t_slot = torch.as_tensor(entry_slot[var], dtype=torch.long, device=dev)
        t_table = torch.as_tensor(table, dtype=torch.float64, device=dev)
        shape = (len(slot_groups), width)

        def fn(probs: torch.Tensor) -> torch.Tensor:
            if len(var) == 0:
                return t_const
            probs = probs.to(dev, torch.float64)
            if tuple(probs.shape) != shape:
                raise ValueError(f"probabilities must have shape {shape}, got {tuple(probs.shape)}")
            return t_const.index_add(0, t_dim, (t_table * probs[t_slot]).sum(dim=1))

        return fn


def trace_layers(space, model: nn.Module, batch: int = 1) -> tuple[list[LayerInstance], DimTable]:
    """Every call of every Conv2d/Linear layer of ``model`` at the space's input shape."""
    calls: list[tuple[str, nn.Module, tuple]] = []

    def hook(name):
        def fn(mod, inputs, output):
            if inputs and isinstance(inputs[0], torch.Tensor):
                calls.append((name, mod, tuple(inputs[0].shape)))
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *space.input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    blocks = [b.name for b in space.blocks]

    def block_of(name: str) -> int:
        for i, b in enumerate(blocks):
            if name == b or name.startswith(b + "."):
                return i
        return -1

    table = DimTable(space)
    layers: list[LayerInstance] = []
    for name, m, shape in calls:
        if isinstance(m, nn.Conv2d):
            depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            cfg = LayerConfig(
                op="dwconv" if depthwise else "conv", kernel=_pair(m.kernel_size), stride=_pair(m.stride),
                pads=_conv_pads(m), dilation=_pair(m.dilation), groups=1 if depthwise else int(m.groups),
                in_hw=(int(shape[-2]), int(shape[-1])), batch=batch,
            )
            d_out = table.add((name, "out"), m.out_channels)
            # a depthwise layer's cost follows its one channel count: C_in is the constant 1
            d_in = table.add(("", "one"), 1) if depthwise else table.add((name, "in"), m.in_channels)
        else:
            rows = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
            cfg = LayerConfig(op="linear", in_hw=(rows, 1), batch=batch)
            d_out = table.add((name, "out"), m.out_features)
            d_in = table.add((name, "in"), m.in_features)
        layers.append(LayerInstance(name, cfg, d_in, d_out, block_of(name)))
    table.finish()
    return layers, table


def grid_points(lo: float, hi: float, n: int, step: int = 1) -> list[int]:
    """About ``n`` channel counts from ``lo`` to ``hi`` (both included), the inner ones multiples
    of ``step`` (the hardware's channel block). Deterministic, so that layers of different models
    with the same range share measurements."""
    lo, hi = int(round(lo)), int(round(hi))
    if hi <= lo or n <= 1:
        return [hi] if n <= 1 else sorted({lo, hi})
    step = max(1, int(step))
    inner = [int(round(v / step)) * step for v in np.linspace(lo, hi, n)[1:-1]]
    return sorted({lo, hi, *[v for v in inner if lo < v < hi]})


def effective_channels(c, lo, hi, block: int):
    """Channel count ``c`` rounded up to the hardware's channel ``block`` and clamped to [lo, hi]
    (numpy arrays). Runtimes pad channels to their vector block (onnxruntime's NCHWc layout: 16
    with AVX-512, 8 with AVX2), so 56 channels cost what 64 do; the table is interpolated there."""
    if block > 1:
        c = np.ceil(np.asarray(c, dtype=np.float64) / block - 1e-9) * block
    return np.clip(c, lo, hi)

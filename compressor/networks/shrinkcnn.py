"""ShrinkCNN, the network AutoShrink's cell search builds (Zhang et al., AAAI 2020; docs/ALGORITHMS.md
section 3): the cell, the network, and the built-in model spec a found network is saved and
loaded by (``compressor.models.BUILTINS``: :func:`compressor.load` rebuilds one without importing
user code, its settings checked by :func:`shrinkcnn_from_spec`), and its deployment within a MAC
budget (:func:`deploy_network`). The search itself is in :mod:`compressor.nas`.

The cell
    A DAG on ``nodes`` = 8 nodes, initially fully connected (edge i→j for every i < j: 28 edges).
    Node 0 is the cell input. Nodes 1..7 each carry an op, conv-BN-activation with ``width·scale``
    filters: odd nodes a separable 3×3 convolution (depthwise 3×3 + pointwise 1×1), even nodes a
    1×1 convolution (4 + 3 of the 7; the official code shuffles the same alternating list at random).
    A node takes the concatenation of its predecessors' outputs (in node order). Leaves, nodes
    without successors, use a linear activation (no ReLU); the cell output is the concatenation of
    the leaves, added to the cell input, through a 1×1 conv + BN projection where the channel
    counts differ. No activation follows the addition (a linear bottleneck, as in the official code).

Live edges (the reachability rule)
    An edge i→j is *live* when its source i is reachable from node 0 along live edges; then its
    target is too. Every live node other than 0 reaches a leaf (in a finite DAG every path ends at
    a node without successors), and every leaf feeds the cell output, so every live edge lies on
    an input→output path: "source reachable from the input and target reaching the output" reduces
    to "source reachable from the input". :func:`live_edges` drops the others (iterating to a fixed
    point, and also checking the output side explicitly); every cell this module builds, and every
    snapshot, holds live edges only. An edge set whose node 0 has no successor is empty.

The proxy network
    Stem conv 3×3 (``stem`` = 32 filters) + BN + ReLU; three stages of ``cells_per_stage`` residual
    cells (channel scales 1, 2, 4 of ``width`` = 16), 2×2 max-pool between stages; global average
    pooling; a linear classifier. :class:`ShrinkCNN` builds it; :func:`shrinkcnn_macs` counts its
    MACs in closed form.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from compress_base.errors import CompressError

from ..counting import count_params
from ..models import ModelSpec
from ..units import format_count

NUM_NODES = 8
OPS = ("sep3x3", "conv1x1")

Edge = tuple[int, int]


# ---------------------------------------------------------------------- the DAG
def full_edges(nodes: int = NUM_NODES) -> list[Edge]:
    """Every edge i→j with i < j: the fully connected cell (28 edges for 8 nodes)."""
    return [(i, j) for i in range(nodes) for j in range(i + 1, nodes)]


def _normalize(edges: Iterable, nodes: int) -> list[Edge]:
    out = set()
    for e in edges:
        try:
            i, j = (int(v) for v in e)
        except (TypeError, ValueError):
            raise CompressError(f"cell edge {e!r} is not a pair of node indices, e.g. [0, 3]") from None
        if not 0 <= i < j < nodes:
            raise CompressError(f"cell edge {[i, j]} must satisfy 0 <= i < j < {nodes}")
        out.add((i, j))
    return sorted(out)


def _reachable(edges: Sequence[Edge]) -> set[int]:
    """Nodes reachable from node 0 (node 0 included)."""
    seen = {0}
    for i, j in sorted(edges):  # i < j: one pass in source order visits sources before targets
        if i in seen:
            seen.add(j)
    return seen


def cell_leaves(edges: Sequence[Edge]) -> list[int]:
    """Nodes other than 0 that have a predecessor and no successor: they form the cell output."""
    sources = {i for i, _ in edges}
    return sorted({j for _, j in edges} - sources)


def _reaching_output(edges: Sequence[Edge]) -> set[int]:
    """Nodes with a path to a leaf (leaves included)."""
    good = set(cell_leaves(edges))
    for i, j in sorted(edges, reverse=True):  # targets before sources
        if j in good:
            good.add(i)
    return good


def live_edges(edges: Iterable, nodes: int = NUM_NODES) -> list[Edge]:
    """The edges that remain once dead ones are dropped: an edge is kept only if its source is
    reachable from node 0 and its target reaches the cell output (a leaf); to a fixed point."""
    current = _normalize(edges, nodes)
    while True:
        reach = _reachable(current)
        kept = [(i, j) for i, j in current if i in reach]
        out = _reaching_output(kept)
        kept = [(i, j) for i, j in kept if j in out]
        if kept == current:
            return kept
        current = kept


def is_live(edges: Iterable, nodes: int = NUM_NODES) -> bool:
    """Whether every edge in ``edges`` is live."""
    norm = _normalize(edges, nodes)
    return bool(norm) and live_edges(norm, nodes) == norm


def node_ops(nodes: int = NUM_NODES) -> dict[int, str]:
    """The op of each node 1..nodes-1: separable 3×3 on odd nodes, 1×1 conv on even ones."""
    return {j: OPS[(j + 1) % 2] for j in range(1, nodes)}


# ---------------------------------------------------------------------- modules
def _node_op(op: str, cin: int, cout: int, linear: bool) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = []
    if op == "sep3x3":
        layers += [("dw", nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)),
                   ("pw", nn.Conv2d(cin, cout, 1, bias=False))]
    elif op == "conv1x1":
        layers += [("conv", nn.Conv2d(cin, cout, 1, bias=False))]
    else:
        raise CompressError(f"unknown cell op {op!r}: use one of {', '.join(OPS)}")
    layers += [("bn", nn.BatchNorm2d(cout)), ("act", nn.Identity() if linear else nn.ReLU())]
    return nn.Sequential(OrderedDict(layers))


class Cell(nn.Module):
    """One residual DAG cell: ``concat(leaves) + proj(x)``."""

    def __init__(self, edges: Iterable, in_channels: int, channels: int, nodes: int = NUM_NODES,
                 ops: dict[int, str] | None = None):
        super().__init__()
        self.edges = live_edges(edges, nodes)
        if not self.edges:
            raise CompressError("a cell needs at least one live edge from its input (node 0)")
        ops = ops or node_ops(nodes)
        self.in_channels, self.channels = int(in_channels), int(channels)
        self.preds: dict[int, list[int]] = {}
        for i, j in self.edges:
            self.preds.setdefault(j, []).append(i)
        self.order = sorted(self.preds)
        self.leaves = cell_leaves(self.edges)
        self.node_ops = {j: ops[j] for j in self.order}
        self.nodes = nn.ModuleDict()
        for j in self.order:
            cin = sum(self.in_channels if p == 0 else self.channels for p in self.preds[j])
            self.nodes[f"node{j}"] = _node_op(ops[j], cin, self.channels, linear=j in self.leaves)
        self.out_channels = self.channels * len(self.leaves)
        self.proj = None
        if self.out_channels != self.in_channels:
            self.proj = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(self.in_channels, self.out_channels, 1, bias=False)),
                ("bn", nn.BatchNorm2d(self.out_channels)),
            ]))

    def forward(self, x):
        outs = {0: x}
        for j in self.order:
            preds = self.preds[j]
            inp = outs[preds[0]] if len(preds) == 1 else torch.cat([outs[p] for p in preds], 1)
            outs[j] = self.nodes[f"node{j}"](inp)
        y = outs[self.leaves[0]] if len(self.leaves) == 1 else torch.cat([outs[j] for j in self.leaves], 1)
        if self.proj is None:
            return y + x
        return y + self.proj(x)


class ShrinkCNN(nn.Module):
    """Stem, three stages of residual DAG cells with max-pool between, global pooling, linear head.

    ``stem_stride`` (1, 2, 4, ...) reduces the resolution before the first stage for large
    deployment inputs: a stride-2 stem conv, then a max-pool for the rest.
    """

    def __init__(self, edges: Iterable | None = None, num_classes: int = 10, scales: Sequence[int] = (1, 2, 4),
                 cells_per_stage: int = 1, width: int = 16, stem: int = 32, stem_stride: int = 1,
                 nodes: int = NUM_NODES, ops: dict[int, str] | None = None):
        super().__init__()
        if cells_per_stage < 1 or width < 1 or stem < 1 or num_classes < 1:
            raise CompressError("ShrinkCNN needs cells_per_stage, width, stem and num_classes of at least 1")
        if stem_stride < 1 or stem_stride & (stem_stride - 1):
            raise CompressError(f"stem_stride {stem_stride} must be a power of two (1, 2, 4, ...)")
        self.edges = live_edges(full_edges(nodes) if edges is None else edges, nodes)
        self.config = {"scales": [int(s) for s in scales], "cells_per_stage": int(cells_per_stage),
                       "width": int(width), "stem": int(stem), "stem_stride": int(stem_stride), "nodes": int(nodes)}
        stem_layers: list[tuple[str, nn.Module]] = [
            ("conv", nn.Conv2d(3, stem, 3, stride=min(stem_stride, 2), padding=1, bias=False)),
            ("bn", nn.BatchNorm2d(stem)),
            ("act", nn.ReLU()),
        ]
        if stem_stride > 2:
            stem_layers.append(("pool", nn.MaxPool2d(stem_stride // 2)))
        self.stem = nn.Sequential(OrderedDict(stem_layers))
        layers: list[tuple[str, nn.Module]] = []
        channels = stem
        for s, scale in enumerate(scales):
            if s > 0:
                layers.append((f"pool{s}", nn.MaxPool2d(2)))
            for c in range(cells_per_stage):
                cell = Cell(self.edges, channels, width * scale, nodes, ops)
                layers.append((f"stage{s + 1}_cell{c + 1}", cell))
                channels = cell.out_channels
        self.features = nn.Sequential(OrderedDict(layers))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.features(self.stem(x))
        return self.classifier(torch.flatten(self.pool(x), 1))



# ---------------------------------------------------------------------- costs in closed form
def _conv_out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def shrinkcnn_macs(edges: Iterable, input_shape: Sequence[int], num_classes: int = 10, cells_per_stage: int = 1,
                   width: int = 16, stem: int = 32, scales: Sequence[int] = (1, 2, 4), stem_stride: int = 1,
                   nodes: int = NUM_NODES) -> int:
    """MACs of a ShrinkCNN at batch 1 and ``input_shape`` without building it (equals
    :func:`compressor.counting.count_macs` on the built network)."""
    edges = live_edges(edges, nodes)
    _, h, w = (int(v) for v in input_shape)
    s1 = min(stem_stride, 2)
    h, w = _conv_out(h, 3, s1, 1), _conv_out(w, 3, s1, 1)
    macs = h * w * stem * 3 * 9
    if stem_stride > 2:
        h, w = h // (stem_stride // 2), w // (stem_stride // 2)
    preds: dict[int, list[int]] = {}
    for i, j in edges:
        preds.setdefault(j, []).append(i)
    leaves = cell_leaves(edges)
    ops = node_ops(nodes)
    channels = stem
    for s, scale in enumerate(scales):
        if s > 0:
            h, w = h // 2, w // 2
        c = width * scale
        for _ in range(cells_per_stage):
            for j in sorted(preds):
                cin = sum(channels if p == 0 else c for p in preds[j])
                macs += h * w * cin * c + (h * w * cin * 9 if ops[j] == "sep3x3" else 0)
            out = c * len(leaves)
            if out != channels:
                macs += h * w * channels * out
            channels = out
    return macs + channels * num_classes


log = logging.getLogger(__name__)

SPEC_NAME = "compressor.networks.shrinkcnn:shrinkcnn"


# ---------------------------------------------------------------------- the model spec
def shrinkcnn(num_classes: int = 10, edges: Sequence[Sequence[int]] | None = None, cells_per_stage: int = 1,
              width: int = 16, stem: int = 32, scales: Sequence[int] = (1, 2, 4), stem_stride: int = 1) -> ShrinkCNN:
    """Model spec ``compressor.nas.shrinkcnn:shrinkcnn``: a ShrinkCNN from JSON-able arguments
    (``edges`` a list of ``[i, j]``; None: the fully connected cell)."""
    return ShrinkCNN(edges, num_classes, tuple(scales), cells_per_stage, width, stem, stem_stride)


def _spec_bounds() -> dict[str, tuple[int, int]]:
    """Integer settings a spec read from a file may give, and their ranges (what deployment uses)."""
    return {"cells_per_stage": (1, max(CELLS_CHOICES)), "width": (1, max(WIDTH_CHOICES)),
            "stem": (1, 2 * max(WIDTH_CHOICES)), "stem_stride": (1, 128)}


def _spec_int(where: str, key: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CompressError(f"{where}: ShrinkCNN setting {key}={value!r} must be an integer in {lo}..{hi}: "
                            "save the model again")
    return value


def _spec_list(where: str, key: str, value, most: int) -> list:
    if not isinstance(value, list) or not 1 <= len(value) <= most:
        raise CompressError(f"{where}: ShrinkCNN setting {key} must be a list of 1..{most} entries: "
                            "save the model again")
    return value


def _spec_edge(where: str, edge) -> list[int]:
    if not isinstance(edge, list) or len(edge) != 2:
        raise CompressError(f"{where}: ShrinkCNN edge {edge!r} must be a pair of node indices, e.g. [0, 3]: "
                            "save the model again")
    return [_spec_int(where, "edge node", v, 0, NUM_NODES - 1) for v in edge]


def shrinkcnn_from_spec(num_classes: int | None, kwargs: dict, where: str = "model spec") -> ShrinkCNN:
    """:func:`shrinkcnn` for a spec read from a file: every setting's name, type and range is
    checked before anything is built (the ranges cover what :func:`deploy_network` makes)."""
    bounds = _spec_bounds()
    unknown = sorted(set(kwargs) - set(bounds) - {"edges", "scales"})
    if unknown:
        raise CompressError(f"{where}: unknown ShrinkCNN setting {unknown[0]!r}: use "
                            f"{', '.join(sorted([*bounds, 'edges', 'scales']))}")
    checked = {key: _spec_int(where, key, kwargs[key], *bounds[key]) for key in bounds if key in kwargs}
    stride = checked.get("stem_stride", 1)
    if stride & (stride - 1):
        raise CompressError(f"{where}: ShrinkCNN setting stem_stride={stride} must be a power of two (1, 2, 4, ...)")
    if "scales" in kwargs:
        scales = _spec_list(where, "scales", kwargs["scales"], 4)
        checked["scales"] = [_spec_int(where, "scales", s, 1, 8) for s in scales]
    if kwargs.get("edges") is not None:
        edges = _spec_list(where, "edges", kwargs["edges"], len(full_edges()))
        checked["edges"] = [_spec_edge(where, e) for e in edges]
    return shrinkcnn(10 if num_classes is None else num_classes, **checked)


def model_spec(edges: Iterable, num_classes: int, cells_per_stage: int = 1, width: int = 16, stem: int = 32,
               scales: Sequence[int] = (1, 2, 4), stem_stride: int = 1) -> ModelSpec:
    """The :class:`~compressor.models.ModelSpec` that rebuilds this network (kwargs are JSON data)."""
    kwargs = {"edges": [list(e) for e in live_edges(edges)], "cells_per_stage": int(cells_per_stage),
              "width": int(width), "stem": int(stem), "scales": [int(s) for s in scales],
              "stem_stride": int(stem_stride)}
    return ModelSpec(SPEC_NAME, int(num_classes), kwargs)


# ---------------------------------------------------------------------- deployment
CELLS_CHOICES = (1, 2, 3, 4)
WIDTH_CHOICES = (8, 16, 24, 32, 40, 48, 64, 80, 96, 128)


def auto_stem_stride(input_shape: Sequence[int], proxy_resolution: int = 32) -> int:
    """The stem reduction for a deployment input: the largest power of two s with
    min(H, W) // s >= ``proxy_resolution`` (1 below that), so the first stage sees about the proxy's
    resolution: 1 at 32×32, 2 at 64×64, 4 at 224×224 (56×56, 28×28, 14×14 in the three stages)."""
    size = min(int(input_shape[1]), int(input_shape[2]))
    s = 1
    while size // (s * 2) >= proxy_resolution:
        s *= 2
    return s


def deploy_network(cell_edges: Iterable, budget_macs: int, input_shape: Sequence[int] = (3, 32, 32),
                   num_classes: int = 10, *, cells_choices: Sequence[int] = CELLS_CHOICES,
                   width_choices: Sequence[int] = WIDTH_CHOICES, stem_stride: int | None = None,
                   scales: Sequence[int] = (1, 2, 4)) -> tuple[ShrinkCNN, ModelSpec]:
    """Stack the found cell into the largest network that fits ``budget_macs`` at ``input_shape``.

    Tries every (cells per stage, width) pair of the choices, with the stem at twice the width,
    and keeps the one with the most MACs within budget (ties: fewer cells). ``stem_stride``
    None picks :func:`auto_stem_stride`. Returns the network (freshly initialised, eval mode)
    and the ModelSpec that rebuilds it.
    """
    edges = live_edges(cell_edges)
    if not edges:
        raise CompressError("the cell has no live edge: pick a snapshot with edges")
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or shape[0] != 3:
        raise CompressError(f"deployment input shape {shape} must be 3xHxW")
    stride = auto_stem_stride(shape) if stem_stride is None else int(stem_stride)
    best = None
    smallest = None
    for cells in cells_choices:
        for width in width_choices:
            kw = dict(cells_per_stage=int(cells), width=int(width), stem=2 * int(width), scales=tuple(scales),
                      stem_stride=stride)
            macs = shrinkcnn_macs(edges, shape, num_classes, **kw)
            if smallest is None or macs < smallest:
                smallest = macs
            if macs <= budget_macs and (best is None or macs > best[0]):
                best = (macs, kw)
    if best is None:
        raise CompressError(
            f"budget of {format_count(budget_macs)} MACs is below the smallest ShrinkCNN of this cell "
            f"({format_count(smallest)} MACs at input {'x'.join(map(str, shape))}): "
            f"raise the budget to at least {smallest}")
    macs, kw = best
    spec = model_spec(edges, num_classes, **kw)
    model = shrinkcnn(num_classes, **spec.kwargs).eval()
    log.info("shrinkcnn deploy: %d cells per stage, width %d, stem stride %d: %s MACs (budget %s), %s params",
             kw["cells_per_stage"], kw["width"], stride, format_count(macs), format_count(budget_macs),
             format_count(count_params(model)))
    return model, spec


# ---------------------------------------------------------------------- end to end

"""The ShrinkCNN cell and the network built of it (AutoShrink, Zhang et al., AAAI 2020; ALGORITHMS.md
section 3).

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

from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ..errors import CompressError

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

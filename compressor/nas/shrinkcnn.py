"""ShrinkCNN: AutoShrink's cell search from scratch (ALGORITHMS.md section 3; Zhang et al., AAAI 2020).

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
    pooling; a linear classifier. :class:`ShrinkCNN` builds it; :func:`shrinkcnn` is the model spec
    ``compressor.nas.shrinkcnn:shrinkcnn`` with JSON-able keyword arguments, a built-in builder
    (``compressor.models.BUILTINS``): :func:`compressor.load` rebuilds a found network without
    importing user code, its settings checked by :func:`shrinkcnn_from_spec`.

The search (:func:`shrinkcnn_search`)
    While more than ``floor`` edges remain: pick ``k`` = 10 live edges at random (fewer if fewer
    exist); for each, build the network without it (and without the edges its removal leaves
    dead), train it from scratch on the proxy set (Adam 4e-3, at most ``epochs`` epochs, early
    stopping) and score it ``accuracy − 0.1·(log10(MACs) − 6)``; remove for good the edge whose
    removal scores best, drop the dead edges, and save a snapshot of the cell. The chosen cell is
    the best-scoring snapshot (:func:`best_snapshot`). :func:`deploy_network` stacks it into the
    largest network that fits a MAC budget at the deployment input shape; :func:`run_nas` does
    search → deploy → train.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..counting import count_params
from ..distributed import map_over_ranks
from ..errors import CompressError
from ..models import ModelSpec
from ..resume import restoring, save_state
from ..search.autoshrink import score
from ..search.autoshrink_proxy import fixed_batches, random_subset, train_from_scratch
from ..units import format_count

log = logging.getLogger(__name__)

NUM_NODES = 8
SPEC_NAME = "compressor.nas.shrinkcnn:shrinkcnn"
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


# ---------------------------------------------------------------------- the search
@dataclass
class CellSnapshot:
    """The cell after one shrinking step (step 0: the fully connected cell, if scored)."""

    step: int
    edges: list[list[int]]
    accuracy: float
    macs: int
    params: int
    score: float
    removed: list[int] | None = None  # the edge the step removed
    dropped: list[list[int]] = field(default_factory=list)  # edges its removal left dead
    candidates: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def best_snapshot(snapshots: Sequence[CellSnapshot]) -> CellSnapshot:
    """The best-scoring snapshot (the earliest, i.e. largest cell, on ties)."""
    if not snapshots:
        raise CompressError("no cell snapshots to choose from: run the search with more edges than its floor")
    return max(snapshots, key=lambda s: (s.score, -s.step))


def _seed(seed: int, step: int, i: int) -> int:
    return (int(seed) * 1_000_003 + step * 1009 + i + 7) % (2**31 - 1)


def shrinkcnn_search(train_data, val_data, num_classes: int, input_shape: Sequence[int] = (3, 32, 32), *,
                     k: int = 10, floor: int = 14, epochs: int = 5, patience: int = 2, lr: float = 4e-3,
                     batch_size: int = 64, train_images: int = 5000, val_images: int = 1000,
                     cost_weight: float = 0.1, cost_offset: float = 6.0, max_steps: int | None = None,
                     width: int = 16, stem: int = 32, nodes: int = NUM_NODES, score_initial: bool = True,
                     seed: int = 0, device: str | torch.device = "cpu", quiet: bool = False,
                     checkpoint: str | Path | None = None) -> list[CellSnapshot]:
    """AutoShrink's edge shrinking on the ShrinkCNN proxy network; returns every snapshot.

    Each candidate (the cell without one live edge) is a proxy network trained from scratch on at
    most ``train_images`` training and scored on ``val_images`` validation images (the paper's
    5000/1000 CIFAR-10 proxy; the digits hold 1437/360) with Adam ``lr`` for at most ``epochs``
    epochs (the paper: 20; the default is scaled for a CPU), stopping after ``patience`` epochs
    without a better validation accuracy; score = accuracy − cost_weight·(log10(MACs) − cost_offset),
    MACs at ``input_shape``. Shrinking stops when at most ``floor`` edges remain (the official
    code keeps half of the 28 edges: 14), after ``max_steps`` steps, or when no edge can go.
    With ``score_initial`` the fully connected cell is trained and scored as snapshot 0.

    With ``checkpoint`` (a file path) the search state (the cell, the snapshots, the random
    generator) is written there after every step, and a later call with the same path continues
    from it. Under torchrun the candidates of a step are split among the ranks.
    """
    _check_counts(k=k, floor=floor, epochs=epochs, patience=patience, batch_size=batch_size,
                  train_images=train_images, val_images=val_images)
    if train_data is None or len(train_data) == 0 or val_data is None or len(val_data) == 0:
        raise CompressError("the ShrinkCNN search needs training and validation images")
    device = torch.device(device)
    rng = np.random.default_rng(seed)
    train_set = random_subset(train_data, train_images, seed)
    val_batches = fixed_batches(random_subset(val_data, val_images, seed + 1), batch_size, 0, seed)
    shape = tuple(int(v) for v in input_shape)

    def evaluate(edges, step, i) -> dict:
        torch.manual_seed(_seed(seed, step, i))
        net = ShrinkCNN(edges, num_classes, width=width, stem=stem, nodes=nodes)
        acc = train_from_scratch(net, train_set, val_batches, epochs=epochs, lr=lr, patience=patience,
                                 batch_size=batch_size, seed=_seed(seed, step, i), device=device)
        macs = shrinkcnn_macs(edges, shape, num_classes, width=width, stem=stem, nodes=nodes)
        return {"accuracy": acc, "macs": macs, "params": count_params(net),
                "score": score(acc, macs, cost_weight, cost_offset)}

    edges = full_edges(nodes)
    snapshots: list[CellSnapshot] = []
    step = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        with restoring(checkpoint, "the ShrinkCNN search") as state:
            step, edges = int(state["step"]), [tuple(e) for e in state["edges"]]
            snapshots = [CellSnapshot(**s) for s in state["snapshots"]]
            rng.bit_generator.state = state["rng"]
        log.info("shrinkcnn: resuming after step %d from %s", step, checkpoint)
    elif score_initial:
        [r] = map_over_ranks(lambda i, e: evaluate(e, 0, 0), [edges])
        snapshots.append(CellSnapshot(0, [list(e) for e in edges], **r))
        _save(checkpoint, step, edges, snapshots, rng)
        log.info("shrinkcnn step 0: %d edges, acc %.4f, %s MACs, score %.4f", len(edges), r["accuracy"],
                 format_count(r["macs"]), r["score"])
    bar = tqdm(total=max(len(full_edges(nodes)) - floor, 0), initial=len(full_edges(nodes)) - len(edges),
               desc="shrinkcnn", unit="edge", disable=True if quiet else None, dynamic_ncols=True)
    try:
        while len(edges) > floor and (max_steps is None or step < max_steps):
            snap = _shrink_step(edges, nodes, rng, k, step + 1, evaluate)
            if snap is None:
                break
            step = snap.step
            snapshots.append(snap)
            _save(checkpoint, step, snap.edges, snapshots, rng)  # before the step is reported as done
            log.info("shrinkcnn step %d: removed %s%s, %d edges left, acc %.4f, %s MACs, score %.4f", step,
                     snap.removed, f" (and {len(snap.dropped)} dead)" if snap.dropped else "", len(snap.edges),
                     snap.accuracy, format_count(snap.macs), snap.score)
            bar.update(min(len(edges) - len(snap.edges), bar.total - bar.n))
            bar.set_postfix_str(f"{len(snap.edges)} edges, score {snap.score:.3f}")
            edges = [tuple(e) for e in snap.edges]
    finally:
        bar.close()
    return snapshots


def _check_counts(**counts) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CompressError(f"ShrinkCNN search option {name}={value!r} must be an integer >= 1")


def _shrink_step(edges, nodes: int, rng, k: int, step: int, evaluate) -> CellSnapshot | None:
    """Step ``step``: score up to ``k`` random removable edges, remove the best-scoring one (and
    the edges it leaves dead); its snapshot, or None when no edge can go."""
    removable = [e for e in edges if live_edges([f for f in edges if f != e], nodes)]
    if not removable:
        return None
    picks = rng.choice(len(removable), size=min(k, len(removable)), replace=False)
    picked = [removable[int(idx)] for idx in picks]
    afters = [live_edges([f for f in edges if f != edge], nodes) for edge in picked]
    # under torchrun candidate i is trained by rank i mod world, with the seed one process uses
    results = map_over_ranks(lambda i, after: evaluate(after, step, i), afters)
    candidates = [{"edge": list(edge), "edges_left": len(after), **r}
                  for edge, after, r in zip(picked, afters, results)]
    best = max(range(len(candidates)), key=lambda i: (candidates[i]["score"], -i))
    edge = tuple(candidates[best]["edge"])
    after = live_edges([f for f in edges if f != edge], nodes)
    dropped = sorted(set(edges) - set(after) - {edge})
    c = candidates[best]
    return CellSnapshot(step, [list(e) for e in after], c["accuracy"], c["macs"], c["params"], c["score"], list(edge),
                        [list(e) for e in dropped], candidates)


def _save(checkpoint, step: int, edges, snapshots: list[CellSnapshot], rng) -> None:
    if checkpoint is not None:
        save_state(checkpoint, {"step": step, "edges": [list(e) for e in edges],
                                "snapshots": [s.to_dict() for s in snapshots], "rng": rng.bit_generator.state})


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
            f"({format_count(smallest)} MACs at input {'x'.join(map(str, shape))}): raise the budget to at least {smallest}")
    macs, kw = best
    spec = model_spec(edges, num_classes, **kw)
    model = shrinkcnn(num_classes, **spec.kwargs).eval()
    log.info("shrinkcnn deploy: %d cells per stage, width %d, stem stride %d: %s MACs (budget %s), %s params",
             kw["cells_per_stage"], kw["width"], stride, format_count(macs), format_count(budget_macs),
             format_count(count_params(model)))
    return model, spec


# ---------------------------------------------------------------------- end to end
SEARCH_OPTIONS = ("k", "floor", "epochs", "patience", "lr", "batch_size", "train_images", "val_images",
                  "cost_weight", "cost_offset", "max_steps", "width", "stem", "score_initial")


def run_nas(data, budget_macs: int, input_shape: Sequence[int] | None = None, *, options: dict | None = None,
            epochs: int = 5, batch_size: int = 64, lr: float = 0.05, seed: int = 0,
            device: str | torch.device = "cpu", quiet: bool = False,
            state_dir: str | Path | None = None) -> tuple[nn.Module, ModelSpec, list[CellSnapshot]]:
    """Search a ShrinkCNN cell on ``data`` (a :class:`~compressor.data.DataBundle`), deploy the best
    snapshot within ``budget_macs`` at ``input_shape`` (default: the data's 3×R×R), and train it
    for ``epochs`` with :func:`compressor.train.train` (SGD, ``lr``).

    ``options`` are :func:`shrinkcnn_search` settings (:data:`SEARCH_OPTIONS`); its proxy MACs are
    counted at the data's resolution. Returns the trained model (CPU, eval mode), the spec that
    rebuilds it, and all snapshots. With ``state_dir`` the search checkpoints every step and the
    training every epoch there, and a later call with the same folder continues where they stopped.
    """
    from ..data import make_loader
    from ..train import train

    options = dict(options or {})
    unknown = sorted(set(options) - set(SEARCH_OPTIONS))
    if unknown:
        raise CompressError(f"unknown ShrinkCNN option {unknown[0]!r}: use one of {', '.join(SEARCH_OPTIONS)}")
    proxy_shape = (3, data.resolution, data.resolution)
    shape = tuple(int(v) for v in (input_shape or proxy_shape))
    options.setdefault("batch_size", batch_size)
    state = Path(state_dir) if state_dir is not None else None
    snapshots = shrinkcnn_search(data.train, data.val, data.num_classes, proxy_shape, seed=seed, device=device,
                                 quiet=quiet, checkpoint=state / "search-shrinkcnn.pt" if state else None, **options)
    chosen = best_snapshot(snapshots)
    log.info("shrinkcnn: chose step %d (%d edges, proxy acc %.4f, score %.4f)", chosen.step, len(chosen.edges),
             chosen.accuracy, chosen.score)
    torch.manual_seed(seed)
    model, spec = deploy_network(chosen.edges, budget_macs, shape, data.num_classes)
    if epochs > 0:
        train_loader = make_loader(data.train, batch_size, shuffle=True, seed=seed, shard=True)  # DDP under torchrun
        val_loader = make_loader(data.val, batch_size, shuffle=False, seed=seed)
        train(model, train_loader, epochs, lr=lr, device=device, val_loader=val_loader, quiet=quiet, desc="nas train",
              checkpoint=state / "nas-train.pt" if state else None)
    return model.cpu().eval(), spec, snapshots

"""AutoShrink's edge shrinking of the ShrinkCNN cell (:func:`shrinkcnn_search`; docs/ALGORITHMS.md section 3).

While more than ``floor`` edges remain: pick ``k`` = 10 live edges at random (fewer if fewer
exist); for each, build the network without it (and without the edges its removal leaves
dead), train it from scratch on the proxy set (Adam 4e-3, at most ``epochs`` epochs, early
stopping) and score it ``accuracy − 0.1·(log10(MACs) − 6)``; remove for good the edge whose
removal scores best, drop the dead edges, and save a snapshot of the cell. The chosen cell is
the best-scoring snapshot (:func:`best_cell`).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from compress_base.errors import CompressError

from ..counting import count_params
from ..distributed import map_over_ranks
from ..networks.shrinkcnn import NUM_NODES, ShrinkCNN, full_edges, live_edges, shrinkcnn_macs
from ..progress import show_line
from ..resume import restoring, save_state
from ..runtime import Runtime
from ..search.autoshrink import score
from ..search.autoshrink_proxy import train_from_scratch
from ..search.scoring import fixed_batches, random_subset
from ..units import format_count

log = logging.getLogger(__name__)


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


def best_cell(snapshots: Sequence[CellSnapshot]) -> CellSnapshot:
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
                     runtime: Runtime | None = None, checkpoint: str | Path | None = None) -> list[CellSnapshot]:
    """AutoShrink's edge shrinking on the ShrinkCNN proxy network; returns every snapshot.

    Each candidate (the cell without one live edge) is a proxy network trained from scratch on at
    most ``train_images`` training and scored on ``val_images`` validation images (the paper's
    5000/1000 CIFAR-10 proxy; the digits hold 1437/360) with Adam ``lr`` for at most ``epochs``
    epochs (the paper: 20; the default is scaled for a CPU), stopping after ``patience`` epochs
    without a better validation accuracy; score = accuracy − cost_weight·(log10(MACs) − cost_offset),
    MACs at ``input_shape``. Shrinking stops when at most ``floor`` edges remain (the official
    code keeps half of the 28 edges: 14), after ``max_steps`` steps, or when no edge can go.
    With ``score_initial`` the fully connected cell is trained and scored as snapshot 0. ``runtime``
    gives the device, seed and verbosity (default: CPU, seed 0, a progress bar in a terminal).

    With ``checkpoint`` (a file path) the search state (the cell, the snapshots, the random
    generator) is written there after every step, and a later call with the same path continues
    from it. Under torchrun the candidates of a step are split among the ranks.
    """
    _check_counts(k=k, floor=floor, epochs=epochs, patience=patience, batch_size=batch_size,
                  train_images=train_images, val_images=val_images)
    if train_data is None or len(train_data) == 0 or val_data is None or len(val_data) == 0:
        raise CompressError("the ShrinkCNN search needs training and validation images")
    runtime = runtime or Runtime()
    seed, device = runtime.seed, runtime.device
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
    resumed = checkpoint is not None and Path(checkpoint).is_file()
    if resumed:
        with restoring(checkpoint, "the ShrinkCNN search") as state:
            step, edges = int(state["step"]), [tuple(e) for e in state["edges"]]
            snapshots = [CellSnapshot(**s) for s in state["snapshots"]]
            rng.bit_generator.state = state["rng"]
        log.info("shrinkcnn: resuming after step %d from %s", step, checkpoint)
    bar = runtime.bar(max(len(full_edges(nodes)) - floor, 0), initial=len(full_edges(nodes)) - len(edges),
                      desc="shrinkcnn", unit="edge")
    try:
        if not resumed and score_initial:
            [r] = map_over_ranks(lambda i, e: evaluate(e, 0, 0), [edges])
            snapshots.append(CellSnapshot(0, [list(e) for e in edges], **r))
            _save(checkpoint, step, edges, snapshots, rng)
            show_line(bar, f"shrinkcnn step 0: {len(edges)} edges, acc {r['accuracy']:.4f}, "
                           f"{format_count(r['macs'])} MACs, score {r['score']:.4f}", log)
        while len(edges) > floor and (max_steps is None or step < max_steps):
            snap = _shrink_step(edges, nodes, rng, k, step + 1, evaluate)
            if snap is None:
                break
            step = snap.step
            snapshots.append(snap)
            _save(checkpoint, step, snap.edges, snapshots, rng)  # before the step is reported as done
            dead = f" (and {len(snap.dropped)} dead)" if snap.dropped else ""
            show_line(bar, f"shrinkcnn step {step}: removed {snap.removed}{dead}, {len(snap.edges)} edges left, "
                           f"acc {snap.accuracy:.4f}, {format_count(snap.macs)} MACs, score {snap.score:.4f}", log)
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

"""``autoshrink``: AutoShrink's progressive shrinking (docs/ALGORITHMS.md, section autoshrink) on the
model's own topology.

The paper shrinks a DAG cell one edge at a time; applied to a pretrained model the same loop reads:

1. list the legal shrink moves of the current architecture: drop one kept removable residual block,
   or take one channel group one notch narrower (a notch is the next smaller width on a coarse grid
   of ``notch`` = 10% steps of the group's original width, rounded to the group's choices: the
   space's :meth:`~compressor.space.SearchSpace.width_table` at :func:`~compressor.space.notch_ratios`);
2. sample ``k`` of them at random (fewer if fewer exist);
3. score each candidate on the proxy data by accuracy and cost,
   ``score = accuracy - cost_weight * (log10(cost) - cost_offset)`` with cost the budget's
   :meth:`~compressor.budget.Budget.objective` (MACs, or predicted latency in ms under a latency budget)
   (the paper's ``accuracy - 0.1 * (log10(MACs) - 6)``);
4. commit the best-scoring move and take a snapshot (architecture, score, cost);
5. repeat until the budget holds (optionally ``extra_steps`` further), and return the best-scoring
   snapshot within budget.

Every step commits exactly one move, so successive snapshots differ by exactly one notch or one block.

Candidates are scored in one of two ways (``proxy_train``):

- ``"shared"`` (default): a supernet, a deep copy of the context's model, holds shared weights.
  Each candidate's masks are applied to it (:func:`compressor.surgery.apply_masks`; :mod:`.autoshrink_proxy`),
  the shared
  weights are fine-tuned for ``finetune_steps`` SGD steps under those masks, batch-norm statistics
  are re-estimated under the masks on ``calib_batches`` batches, and accuracy is measured on a fixed
  validation subset of ``eval_batches`` batches; then the shared weights are restored. All
  candidates of a step see the same fine-tuning and calibration batches. After a move is
  committed, the supernet is fine-tuned under the committed architecture for ``commit_steps``.
- ``"scratch"``: as the official code does, each candidate is materialized, re-initialised
  (``reset_parameters`` of every module) and trained from scratch with Adam (``scratch_lr`` 4e-3)
  for at most ``scratch_epochs`` epochs on a proxy subset, with early stopping (``patience``).

Under torchrun the ``k`` candidates of a step are split among the ranks (candidate ``i`` is scored
by rank ``i mod world``, on all of the data and with the seed a single process would use) and the
scores are gathered, so the decisions are exactly those of one process and a step takes about
``1/world`` of the time while ``k >= world``. Every rank commits the chosen move; rank 0's
supernet is then copied to the others.

With ``context.checkpoint`` the search state (step, architecture, history, the shared weights,
the position in the training stream, the random generator and the latency calibration) is
written there atomically after every step, and a later call with the same path continues from it.

The cost term is a :class:`~compressor.costs.Metric` (default: the budget's objective): pass
``cost=`` to :func:`autoshrink_search` to use another (and set ``cost_offset`` to the log10 of a
reference cost in its unit). With ``context.measure`` and a latency bound, every committed
architecture is measured on the target and the search goes on under a budget whose latency model
is rescaled to that measurement (a new model; the caller's is left alone), returned as the
result's ``budget``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from compress_base.errors import CompressError

from ..architecture import Architecture
from ..budget import Budget
from ..costs import Metric
from ..distributed import map_over_ranks
from ..space import ChannelGroup, SearchSpace, notch_ratios
from .autoshrink_proxy import ScratchScorer, SharedScorer
from .base import SearchContext, SearchResult
from .greedy import repair
from .loop import LoopSearcher
from .options import SearchOptions, option
from .registry import create, register

log = logging.getLogger(__name__)

__all__ = ["AutoShrinkOptions", "AutoShrinkSearcher", "Move", "apply_move", "autoshrink_search", "best_snapshot",
           "legal_moves", "move_between", "narrower", "score"]


@dataclass(frozen=True)
class AutoShrinkOptions(SearchOptions):
    """Settings of ``--method autoshrink``."""

    method = "autoshrink"
    k: int = option(10, low=1)  # candidate moves sampled per step
    notch: float = option(0.1, low=0.0, low_open=True, high=1.0)  # grid step, as a fraction of a group's width
    cost_weight: float = option(0.1, low=0.0)  # score = accuracy - cost_weight * (log10(cost) - cost_offset)
    cost_offset: float = 6.0
    proxy_train: str = option("shared", choices=("shared", "scratch"))  # supernet + short fine-tune, or scratch
    finetune_steps: int = option(5, low=0)  # shared: SGD steps of the shared weights under each candidate's masks
    finetune_lr: float = option(0.01, low=0.0, low_open=True)
    calib_batches: int = option(2, low=0)  # shared: batches to re-estimate batch-norm statistics (0: off)
    eval_batches: int = option(8, low=0)  # shared: fixed validation batches that score a candidate (0: all)
    commit_steps: int = option(20, low=0)  # shared: SGD steps of the supernet under each committed architecture
    scratch_epochs: int | None = option(None, low=1)  # scratch: at most this many epochs (None: the context's)
    scratch_lr: float = option(4e-3, low=0.0, low_open=True)  # scratch: Adam learning rate (official code)
    patience: int = option(3, low=1)  # scratch: early stopping after this many epochs without a better accuracy
    scratch_train_images: int = option(5000, low=1)  # scratch: proxy training subset (the paper's CIFAR-10 proxy)
    scratch_val_images: int = option(1000, low=1)
    extra_steps: int = option(0, low=0)  # steps to keep shrinking after the budget holds (snapshots to choose from)
    max_steps: int | None = option(None, low=0)  # stop after this many steps (then repair if still over budget)


# ---------------------------------------------------------------------- score
def score(accuracy: float, cost: float, cost_weight: float = 0.1, cost_offset: float = 6.0) -> float:
    """AutoShrink's objective: ``accuracy - cost_weight * (log10(cost) - cost_offset)``.

    With MACs as the cost and the defaults this is the paper's ``acc - 0.1 * (log10(MACs) - 6)``:
    every tenfold drop in MACs is worth 0.1 of accuracy.
    """
    if not cost > 0:
        raise ValueError(f"cost must be positive, got {cost!r}")
    return float(accuracy) - cost_weight * (math.log10(cost) - cost_offset)


# ---------------------------------------------------------------------- moves
@dataclass(frozen=True)
class Move:
    """One shrink move: ``("width", group, narrower width)`` or ``("block", block, False)``."""

    kind: str
    name: str
    value: int | bool

    def to_dict(self) -> dict:
        return {"move": self.kind, "name": self.name, "value": self.value}


def narrower(group: ChannelGroup, width: int, notch: float = 0.1) -> int | None:
    """The next width below ``width`` on the group's notch grid, or None at the bottom."""
    return _below(group.nearest(notch_ratios(notch), with_full=True), width)


def _below(grid: tuple[int, ...], width: int) -> int | None:
    below = [w for w in grid if w < width]
    return below[-1] if below else None


def legal_moves(space: SearchSpace, arch: Architecture, notch: float = 0.1,
                budget: Budget | None = None) -> list[Move]:
    """Every single shrink move from ``arch``: one notch of a group, or dropping one kept block.

    With a ``budget``, moves that save none of its budgeted costs are left out.
    """
    moves: list[Move] = []
    grid = space.width_table(notch_ratios(notch), with_full=True)
    for g in space.decision_groups:
        w = _below(grid[g.name], arch.widths[g.name])
        if w is not None:
            moves.append(Move("width", g.name, w))
    for b in space.blocks:
        if arch.blocks[b.name]:
            moves.append(Move("block", b.name, False))
    if budget is not None:
        before = budget.costs(space, arch)
        moves = [m for m in moves
                 if any(v < before[k] for k, v in budget.costs(space, apply_move(space, arch, m)).items())]
    return moves


def apply_move(space: SearchSpace, arch: Architecture, move: Move) -> Architecture:
    """``arch`` with one move applied."""
    widths, blocks = dict(arch.widths), dict(arch.blocks)
    if move.kind == "width":
        widths[move.name] = int(move.value)
    elif move.kind == "block":
        blocks[move.name] = bool(move.value)
    else:
        raise ValueError(f"unknown move kind {move.kind!r}")
    return space.architecture(widths, blocks)


def move_between(before: Architecture, after: Architecture) -> list[tuple[str, str, object, object]]:
    """The decisions that differ between two architectures: (kind, name, before, after)."""
    out = [("width", n, v, after.widths[n]) for n, v in before.widths.items() if v != after.widths[n]]
    out += [("block", n, v, after.blocks[n]) for n, v in before.blocks.items() if v != after.blocks[n]]
    return out


# ---------------------------------------------------------------------- the search
def best_snapshot(history: list[dict]) -> dict | None:
    """The best-scoring snapshot within budget among the steps of a search's history (first on ties)."""
    best = None
    for entry in history:
        if entry.get("fits") and "score" in entry and (best is None or entry["score"] > best["score"]):
            best = entry
    return best


@register("autoshrink")
class AutoShrinkSearcher(LoopSearcher):
    """Shrink from the full model one move per step until the budget holds; return the best snapshot.

    ``context`` must carry the model the space was built on, training data and validation data.
    The history has one entry per step: the sampled candidates with their accuracy, cost and
    score, the committed move, and the snapshot after it (architecture, accuracy, cost, score, MACs,
    params, whether it fits); the chosen snapshot's entry has ``"selected": True``. If no
    snapshot fits (``max_steps`` reached, or no move left), the last architecture is brought within
    budget by :func:`~compressor.search.greedy.repair`, whose moves follow with ``"repair": True``.
    """

    Options = AutoShrinkOptions
    unit = "step"
    bar_unit = "%"
    lower = "finetune_lr"
    cost: Metric | None = None  # replaces the budget's objective in the score (autoshrink_search's cost=)

    def prepare(self) -> SearchResult | None:
        space, budget, ctx = self.space, self.budget, self.context
        full = space.full()
        if budget.fits(space, full):
            return SearchResult(full, [{"move": "none", **budget.costs(space, full)}])
        budget.check_reachable(space)
        if ctx.model is None:
            raise CompressError("autoshrink needs the model to score candidates: pass it in the search context")
        if ctx.train_data is None or len(ctx.train_data) == 0:
            raise CompressError("autoshrink needs training images to score candidates: provide training data")
        if ctx.val_data is None or len(ctx.val_data) == 0:
            raise CompressError("autoshrink needs validation images to score candidates: provide validation data")
        return None

    def setup(self) -> None:
        space, opts = self.space, self.options
        self.given = self.budget
        self.rng = np.random.default_rng(self.context.seed)
        scorer = SharedScorer if opts.proxy_train == "shared" else ScratchScorer
        self.scorer = scorer(space, self.context, opts, self.device, self.check_finite)
        self.arch, self.extra_left = space.full(), opts.extra_steps
        # the bar shows how far the cost has come down from the full model's to the budget (log scale),
        # so that it has an end and an ETA although the number of steps is not known in advance
        self.span = math.log(self.budget.excess(space, self.arch))
        log.info("autoshrink: %s proxy, k=%d, notch %.2f, from %s", opts.proxy_train, opts.k, opts.notch,
                 self.budget.costs(space, self.arch))

    def bar_total(self) -> int:
        return 100

    def bar_done(self, index: int) -> float:
        return self._progress()

    def _progress(self) -> float:
        """Percent of the way from the full model's cost down to the budget, on a log scale."""
        return min(100.0, 100.0 * (1.0 - math.log(max(self.budget.excess(self.space, self.arch), 1.0)) / self.span))

    def done(self, index: int, history: list[dict]) -> bool:
        return False  # :meth:`step` says when the search ends

    def _cost(self, arch: Architecture) -> float:
        return float((self.cost or self.budget.objective(self.space)).value(arch))

    def _candidates(self, index: int) -> list[tuple[Move, dict]] | None:
        """Sample and score up to ``k`` legal moves; None when the search ends before this step."""
        space, budget, opts = self.space, self.budget, self.options
        if budget.fits(space, self.arch):
            if self.extra_left <= 0:
                return None
            self.extra_left -= 1
        if opts.max_steps is not None and index - 1 >= opts.max_steps:
            return None
        moves = legal_moves(space, self.arch, opts.notch, budget)
        if not moves:
            log.warning("autoshrink: no shrink move left after %d steps", index - 1)
            return None
        picks = [moves[int(i)] for i in self.rng.choice(len(moves), size=min(opts.k, len(moves)), replace=False)]
        self.scorer.begin_step(index)
        # under torchrun candidate i is scored by rank i mod world, with the seed one process uses
        accuracies = map_over_ranks(lambda i, move: self.scorer.accuracy(
            apply_move(space, self.arch, move), seed=_seed(self.context.seed, index, i)), picks)
        out = []
        for move, acc in zip(picks, accuracies):
            cand = apply_move(space, self.arch, move)
            cost = self._cost(cand)
            out.append((move, {**move.to_dict(), "accuracy": acc, "cost": cost,
                               "score": score(acc, cost, opts.cost_weight, opts.cost_offset),
                               **budget.costs(space, cand)}))
        return out

    def step(self, index: int) -> dict | None:
        candidates = self._candidates(index)
        if candidates is None:
            return None
        best = max(range(len(candidates)), key=lambda i: (candidates[i][1]["score"], -i))
        move, chosen = candidates[best]
        self.arch = arch = apply_move(self.space, self.arch, move)
        self.scorer.commit(arch, seed=_seed(self.context.seed, index, -1))
        self.budget, measured = self.budget.calibrated(self.space, arch, self.context.measure)
        snap = self._snapshot(chosen["accuracy"])
        if measured is not None:
            snap["measured_ms"] = measured
        self.bar.update(self._progress() - self.bar.n)
        self.bar.set_postfix_str(f"step {index}: {move.kind} {move.name} acc {snap['accuracy']:.3f} "
                                 f"score {snap['score']:.3f} over {self.budget.excess(self.space, arch):.2f}x")
        return {"step": index, **move.to_dict(), "candidates": [c for _, c in candidates], **snap}

    def _snapshot(self, accuracy: float) -> dict:
        space, arch, opts = self.space, self.arch, self.options
        cost = self._cost(arch)
        return {"accuracy": accuracy, "cost": cost, "score": score(accuracy, cost, opts.cost_weight, opts.cost_offset),
                "macs": space.macs(arch), "params": space.params(arch), "fits": self.budget.fits(space, arch),
                "architecture": {"widths": dict(arch.widths), "blocks": dict(arch.blocks)}}

    def summary(self, r: dict) -> str:
        return (f"{r['move']} {r['name']} -> {r['value']}; acc {r['accuracy']:.4f} score {r['score']:.4f}, "
                f"{self.budget.costs(self.space, self.arch)}")

    def state_dict(self) -> dict:
        return {"architecture": self.arch.to_dict(), "extra_left": self.extra_left, "rng": self.rng.bit_generator.state,
                "scorer": self.scorer.state_dict(), "calibration": self.budget.calibration()}

    def load_state_dict(self, state: dict) -> None:
        arch = Architecture.from_dict(state["architecture"])
        self.space.check(arch)
        self.scorer.load_state_dict(state["scorer"])
        self.rng.bit_generator.state = state["rng"]
        self.budget = self.budget.with_calibration(state["calibration"])
        self.arch, self.extra_left = arch, int(state["extra_left"])

    def finish(self, history: list[dict]) -> SearchResult:
        space, budget = self.space, self.budget
        calibrated = budget if budget is not self.given else None
        chosen = best_snapshot(history)
        if chosen is None:
            log.warning("autoshrink: no snapshot within budget after %d steps; repairing the last one", len(history))
            fixed = repair(space, budget, self.arch)
            history.extend({**entry, "repair": True} for entry in fixed.history)
            return SearchResult(fixed.architecture, history, calibrated)
        chosen["selected"] = True
        result = space.architecture(chosen["architecture"]["widths"], chosen["architecture"]["blocks"])
        log.info("autoshrink: %d steps, chose step %d (score %.4f, acc %.4f), %s", len(history), chosen["step"],
                 chosen["score"], chosen["accuracy"], budget.costs(space, result))
        return SearchResult(result, history, calibrated)


def autoshrink_search(space: SearchSpace, budget: Budget, context: SearchContext | None = None,
                      cost: Metric | None = None) -> SearchResult:
    """``--method autoshrink`` (:class:`AutoShrinkSearcher`); ``cost`` replaces the budget's
    objective (MACs, or the predicted latency under a latency bound) in the score."""
    searcher = create("autoshrink", space, budget, context)
    searcher.cost = cost
    return searcher.search()


def _seed(seed: int, step: int, i: int) -> int:
    return (int(seed) * 1_000_003 + step * 1009 + i + 1) % (2**31 - 1)

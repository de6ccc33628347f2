"""``greedy``: NetAdapt-style shrinking, every proposal judged by what it measurably loses.

Each step proposes, for every channel group, the narrowest cut that saves about ``step`` of the
original cost (one notch at least), and for every residual block, dropping it; each proposal is
applied to the full network as masks, its batch norm recalibrated, and scored by the distillation
loss on held-out training images, the search context's ``val_data`` (:mod:`compressor.search.scoring`).
The step commits the proposal that adds the least loss per cost saved, until the budget holds; a
final pass widens groups and restores dropped blocks, the move that removes the most loss per cost
first, while the budget still holds.

Without a trained network and training images (or with ``--option images=0``) moves are judged by
weight norms instead: the share of its group's L1 importance a notch removes, and the relative change
a block makes to its input. That is what :func:`repair` does for the searchers whose result may
exceed the budget. Weight norms cannot compare groups with each other (every group's importance sums
to 1), which is why they cut stems and bottlenecks that matter (docs/ALGORITHMS.md).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ..architecture import Architecture
from ..budget import Budget
from ..space import SearchSpace
from .base import SearchContext, Searcher, SearchResult
from .options import SearchOptions, option
from .registry import register
from .scoring import LossScorer

log = logging.getLogger(__name__)


def block_scores(space: SearchSpace, context: SearchContext | None) -> dict[str, float]:
    """Relative change ‖block(x) − post(x)‖ / ‖block(x)‖ each block makes, on a calibration batch."""
    if not space.blocks:
        return {}
    if context is None or context.model is None:
        return {b.name: 1.0 for b in space.blocks}
    model = context.model.eval()
    x = context.calibration
    if x is None:
        gen = torch.Generator().manual_seed(context.seed)
        x = torch.randn(8, *space.input_shape, generator=gen)
    scores: dict[str, float] = {}

    def hook(block):
        post = block.post_module()

        def fn(mod, inputs, output):
            change = (output - post(inputs[0])).norm().item()
            scores[block.name] = change / (output.norm().item() + 1e-12)
        return fn

    handles = [model.get_submodule(b.name).register_forward_hook(hook(b)) for b in space.blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return scores


class _State:
    def __init__(self, space: SearchSpace, budget: Budget, start: Architecture):
        self.space, self.budget = space, budget
        self.groups = space.decision_groups
        self.widths = dict(start.widths)
        self.kept = dict(start.blocks)
        self.scale = {k: float(v) for k, v in budget.costs(space, space.full()).items()}

    def arch(self, widths=None, kept=None):
        return self.space.architecture(widths or self.widths, kept if kept is not None else self.kept)

    def cost(self, arch) -> dict:
        return self.budget.costs(self.space, arch)

    def saved(self, before: dict, after: dict) -> float:
        """Cost saved from ``before`` to ``after``, in shares of the full model's cost (summed over metrics)."""
        return sum((before[k] - after[k]) / self.scale[k] for k in before)

    def needed(self) -> float:
        """The share of the full model's cost still to save, in the metric furthest over its bound."""
        bounds = self.budget.bounds()
        return max(max(0.0, v - bounds[k]) / self.scale[k] for k, v in self.cost(self.arch()).items())


def _step_index(g, width):
    return g.choices.index(width)


@dataclass(frozen=True)
class GreedyOptions(SearchOptions):
    """``--option`` settings of ``greedy``."""

    step: float = option(0.05, low=0.0, low_open=True, high=0.5)  # share of the original cost one move saves
    images: int = option(256, low=0)  # held-out images that score a move (as many recalibrate batch norm); 0: norms
    screen: int = option(64, low=0)  # images that first screen every proposal; 0: score every one on all images
    finalists: int = option(4, low=1)  # proposals the screen passes on to be scored on all images


@register("greedy")
class GreedySearcher(Searcher):
    """Shrink from the full model until the budget holds, then widen back while it still holds."""

    Options = GreedyOptions

    def search(self) -> SearchResult:
        space, budget, ctx = self.space, self.budget, self.context
        if budget.fits(space, space.full()):
            return SearchResult(space.full(), [{"move": "none", **budget.costs(space, space.full())}])
        return refine(space, budget, space.full(), ctx, self.options)


def refine(space: SearchSpace, budget: Budget, start: Architecture, context: SearchContext,
           options: GreedyOptions = GreedyOptions()) -> SearchResult:
    """Bring ``start`` within the budget and spend what it leaves: :func:`shrink_by_loss` from
    ``start``, moves judged by measured loss on the context's held-out images (``val_data``, else
    ``train_data``). Without a model and at least 4 images, or with ``options.images`` 0, by weight
    norms instead (:func:`repair`). ``context.model`` keeps its weights and mode. Greedy is this from
    the full model; TAS and ASNG end with it from the architecture they found."""
    ctx = context
    data = ctx.val_data if ctx.val_data is not None and len(ctx.val_data) else ctx.train_data
    if ctx.model is None:
        return repair(space, budget, start, block_scores(space, ctx))
    was_training = ctx.model.training  # both block_scores and the scorers put it in eval mode
    try:
        if data is None or len(data) < 4 or options.images == 0:
            return repair(space, budget, start, block_scores(space, ctx))
        scorer = LossScorer.from_data(space, ctx.model, data, options.images, ctx.seed)
        screen = LossScorer.from_data(space, ctx.model, data, options.screen, ctx.seed,
                                      batch_size=options.screen) if 0 < options.screen < options.images else None
        return shrink_by_loss(space, budget, scorer, options.step, screen, options.finalists, start)
    finally:
        ctx.model.train(was_training)


def _proposals(state: _State, target: float):
    """``(move, architecture)`` pairs: each group cut to the widest choice that saves ``target`` of the
    original cost (one notch at least, its narrowest if none saves that much), and each kept block dropped."""
    base = state.cost(state.arch())
    for g in state.groups:
        i = _step_index(g, state.widths[g.name])
        for j in range(i - 1, -1, -1):
            arch = state.arch({**state.widths, g.name: g.choices[j]})
            if j == 0 or state.saved(base, state.cost(arch)) >= target:
                yield ("width", g.name, g.choices[j]), arch
                break
    for b in state.space.blocks:
        if state.kept[b.name]:
            yield ("block", b.name, False), state.arch(kept={**state.kept, b.name: False})


def _best(proposals: list, scorer: LossScorer, screen: LossScorer | None, finalists: int, losses: tuple) -> tuple:
    """``(loss, move, costs)`` of the proposal whose loss change per cost changed is least: each
    proposal is ``(move, architecture, costs, cost_change)``, ``losses`` the current ``(scorer, screen)``
    losses. With a screen, only its ``finalists`` best are scored by ``scorer``. A proposal changing
    no cost (a latency plateau) is taken only when none changes any, the least harmful first."""
    def rate(loss, base, change):
        return (loss - base) / change if change > 0 else math.inf

    if screen is not None and len(proposals) > finalists:
        proposals = sorted(proposals, key=lambda p: rate(screen.loss(p[1]), losses[1], p[3]))[:finalists]
    scored = [(scorer.loss(arch), move, costs, change) for move, arch, costs, change in proposals]
    best = min(scored, key=lambda s: (rate(s[0], losses[0], s[3]), s[0]))
    return best[:3]


def shrink_by_loss(space: SearchSpace, budget: Budget, scorer: LossScorer, step: float = 0.05,
                   screen: LossScorer | None = None, finalists: int = 4,
                   start: Architecture | None = None) -> SearchResult:
    """Shrink ``start`` (default: the full architecture) by the proposal that adds the least measured
    loss per cost saved until the budget holds, then widen one notch at a time or restore a dropped
    block, the most loss removed per cost added first, while it holds. With a ``screen`` (a scorer on
    fewer images), each step scores every proposal on it and only its ``finalists`` best on all of
    ``scorer``'s images. Every history entry records the loss of the architecture it reached."""
    state = _State(space, budget, start or space.full())
    history: list[dict] = []
    screened = (lambda: screen.loss(state.arch())) if screen is not None else (lambda: 0.0)
    current = (scorer.loss(state.arch()), screened())

    def commit(kind, name, value, loss, costs):
        nonlocal current
        if kind in ("block", "restore"):
            state.kept[name] = value
        else:
            state.widths[name] = value
        current = (loss, screened())
        history.append({"move": kind, "name": name, "value": value, "loss": loss, **costs})

    while not budget.fits(space, state.arch()):
        before = state.cost(state.arch())
        proposals = [(move, arch, state.cost(arch)) for move, arch in
                     _proposals(state, max(min(step, state.needed()), 1e-9))]
        if not proposals:
            break  # nothing left to shrink; callers check reachability first
        loss, move, costs = _best([(m, a, c, state.saved(before, c)) for m, a, c in proposals],
                                  scorer, screen, finalists, current)
        commit(*move, loss, costs)
    while True:
        before, wider = state.cost(state.arch()), []
        for g in state.groups:
            i = _step_index(g, state.widths[g.name])
            arch = state.arch({**state.widths, g.name: g.choices[i + 1]}) if i + 1 < len(g.choices) else None
            if arch is not None and budget.fits(space, arch):
                costs = state.cost(arch)
                wider.append((("widen", g.name, g.choices[i + 1]), arch, costs, state.saved(costs, before)))
        for b in space.blocks:
            arch = state.arch(kept={**state.kept, b.name: True})
            if not state.kept[b.name] and budget.fits(space, arch):
                costs = state.cost(arch)
                wider.append((("restore", b.name, True), arch, costs, state.saved(costs, before)))
        if not wider:
            break
        loss, move, costs = _best(wider, scorer, screen, finalists, current)
        commit(*move, loss, costs)
    arch = state.arch()
    log.info("greedy: %d moves, %d architectures scored, %s", len(history), scorer.evaluations, state.cost(arch))
    return SearchResult(arch, history)


def greedy_search(space: SearchSpace, budget: Budget, context: SearchContext | None = None) -> SearchResult:
    """``--method greedy`` (:class:`GreedySearcher`)."""
    return GreedySearcher(space, budget, context or SearchContext(), GreedySearcher.Options()).search()


def repair(space: SearchSpace, budget: Budget, start: Architecture,
           bscores: dict[str, float] | None = None) -> SearchResult:
    """Bring ``start`` within budget by the greedy moves, then widen back while the budget holds.

    Searchers whose result may exceed the budget (ASNG, TAS's argmax) end with this.
    """
    state = _State(space, budget, start)
    bscores = bscores if bscores is not None else {b.name: 1.0 for b in space.blocks}
    history: list[dict] = []
    current = state.cost(state.arch())
    saved = state.saved

    while not budget.fits(space, state.arch()):
        best, flat = None, None  # flat: the cheapest move that saves nothing (a latency plateau)
        moves = []
        for g in state.groups:
            i = _step_index(g, state.widths[g.name])
            if i > 0:
                narrower = g.choices[i - 1]
                loss = float(g.importance[narrower:state.widths[g.name]].sum())
                moves.append((loss, ("width", g.name, narrower), state.arch({**state.widths, g.name: narrower})))
        for b in space.blocks:
            if state.kept[b.name]:
                dropped = state.arch(kept={**state.kept, b.name: False})
                moves.append((bscores[b.name], ("block", b.name, False), dropped))
        for loss, move, arch in moves:
            after = state.cost(arch)
            gain = saved(current, after)
            if gain > 0 and (best is None or loss / gain < best[0]):
                best = (loss / gain, move, after)
            elif gain == 0 and (flat is None or loss < flat[0]):
                flat = (loss, move, after)
        # Where a runtime pads channels to a block, a notch inside a block saves no predicted latency:
        # take the cheapest such move to cross the plateau rather than stop over budget.
        best = best or flat
        if best is None:
            break  # nothing left to shrink; callers check reachability first
        _, (kind, name, value), current = best
        if kind == "width":
            state.widths[name] = value
        else:
            state.kept[name] = value
        history.append({"move": kind, "name": name, "value": value, **current})

    _widen(state, history)
    arch = state.arch()
    log.info("greedy: %d moves, %s", len(history), state.cost(arch))
    return SearchResult(arch, history)


def _widen(state: _State, history: list) -> None:
    """Undo shrinking one notch at a time, most importance regained per cost first, within budget."""
    space, budget = state.space, state.budget
    while True:
        current = state.cost(state.arch())
        best = None
        for g in state.groups:
            i = _step_index(g, state.widths[g.name])
            if i + 1 >= len(g.choices):
                continue
            wider = g.choices[i + 1]
            arch = state.arch({**state.widths, g.name: wider})
            if not budget.fits(space, arch):
                continue
            after = state.cost(arch)
            gain = float(g.importance[state.widths[g.name]:wider].sum())
            added = sum((after[k] - current[k]) / state.scale[k] for k in after)
            value = gain / max(added, 1e-12)
            if best is None or value > best[0]:
                best = (value, g.name, wider, after)
        if best is None:
            return
        _, name, wider, after = best
        state.widths[name] = wider
        history.append({"move": "widen", "name": name, "value": wider, **after})

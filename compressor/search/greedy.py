"""``greedy``: NetAdapt-like shrinking by importance lost per cost saved.

Each step considers every single move (take one channel group one notch narrower, or drop one
residual block) and commits the one that loses the least importance per unit of budgeted cost
saved, until the budget holds. A final pass widens groups again, most valuable first, while the
budget still holds, so the result sits as close under the budget as the channel grid allows.

Importance of a notch is the share of its group's L1 importance the removed channels carry; that
of a block is the relative change it makes to its input on a calibration batch.
"""
from __future__ import annotations

import logging

import torch

from ..architecture import Architecture
from ..budget import Budget
from ..space import SearchSpace
from .base import SearchContext, Searcher, SearchResult
from .registry import register

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


def _step_index(g, width):
    return g.choices.index(width)


@register("greedy")
class GreedySearcher(Searcher):
    """Shrink from the full model until the budget holds, then widen back while it still holds."""

    def search(self) -> SearchResult:
        space, budget = self.space, self.budget
        if budget.fits(space, space.full()):
            return SearchResult(space.full(), [{"move": "none", **budget.costs(space, space.full())}])
        return repair(space, budget, space.full(), block_scores(space, self.context))


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

    def saved(before: dict, after: dict) -> float:
        return sum((before[k] - after[k]) / state.scale[k] for k in before)

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

"""``uniform``: one width ratio for every channel group, the largest that meets the budget."""
from __future__ import annotations

import logging

from compress_base.errors import CompressError

from ..budget import Budget
from ..space import SearchSpace
from .base import SearchContext, Searcher, SearchResult
from .registry import register

log = logging.getLogger(__name__)


@register("uniform")
class UniformSearcher(Searcher):
    """Bisect the ratio r in [0, 1]: every group takes the choice nearest r of its width."""

    def search(self) -> SearchResult:
        space, budget = self.space, self.budget
        if budget.fits(space, space.full()):
            return SearchResult(space.full(), [{"ratio": 1.0, **budget.costs(space, space.full())}])
        lo, hi = 0.0, 1.0
        if not budget.fits(space, space.uniform(lo)):
            costs = budget.costs(space, space.uniform(lo))
            raise CompressError(
                f"one uniform width ratio cannot meet the budget (narrowest uniform model: {costs}); "
                "use --method greedy, which also drops blocks"
            )
        history = []
        for _ in range(40):
            mid = (lo + hi) / 2
            fits = budget.fits(space, space.uniform(mid))
            history.append({"ratio": mid, "fits": fits, **budget.costs(space, space.uniform(mid))})
            lo, hi = (mid, hi) if fits else (lo, mid)
        arch = space.uniform(lo)
        log.info("uniform: ratio %.3f, %s", lo, budget.costs(space, arch))
        return SearchResult(arch, history)


def uniform_search(space: SearchSpace, budget: Budget, context: SearchContext | None = None) -> SearchResult:
    """``--method uniform`` (:class:`UniformSearcher`)."""
    return UniformSearcher(space, budget, context or SearchContext(), UniformSearcher.Options()).search()

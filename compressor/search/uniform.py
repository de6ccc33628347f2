"""``uniform``: one width ratio for every channel group, the largest that meets the budget."""
from __future__ import annotations

import logging

from ..budget import Budget
from ..errors import CompressError
from ..space import SearchSpace
from .base import SearchContext, SearchResult

log = logging.getLogger(__name__)


def uniform_search(space: SearchSpace, budget: Budget, context: SearchContext | None = None) -> SearchResult:
    """Bisect the ratio r in [0, 1]: every group takes the choice nearest r of its width."""
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

"""Searchers: pick an architecture in a search space that meets a budget.

Every searcher is ``fn(space, budget, context) -> SearchResult``; ``SEARCHERS`` maps the names
``--method`` accepts to them.
"""
from .asng import CategoricalASNG
from .asng_search import asng_search
from .autoshrink import autoshrink_search
from .base import SearchContext, SearchResult
from .greedy import greedy_search, repair
from .tas import tas_search
from .uniform import uniform_search

SEARCHERS = {
    "uniform": uniform_search,
    "greedy": greedy_search,
    "tas": tas_search,
    "asng": asng_search,
    "autoshrink": autoshrink_search,
}

__all__ = [
    "SEARCHERS",
    "CategoricalASNG",
    "SearchContext",
    "SearchResult",
    "asng_search",
    "autoshrink_search",
    "greedy_search",
    "repair",
    "tas_search",
    "uniform_search",
]

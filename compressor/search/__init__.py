"""Searchers: pick an architecture in a search space that meets a budget.

Every searcher is ``fn(space, budget, context) -> SearchResult``; ``SEARCHERS`` maps the names
``--method`` accepts to them.
"""
import dataclasses

from ..errors import CompressError
from .asng import CategoricalASNG
from .asng_search import DEFAULTS as _ASNG_DEFAULTS
from .asng_search import asng_search
from .autoshrink import DEFAULTS as _AUTOSHRINK_DEFAULTS
from .autoshrink import autoshrink_search
from .base import SearchContext, SearchResult
from .greedy import greedy_search, repair
from .tas import TASOptions, tas_search
from .uniform import uniform_search

SEARCHERS = {
    "uniform": uniform_search,
    "greedy": greedy_search,
    "tas": tas_search,
    "asng": asng_search,
    "autoshrink": autoshrink_search,
}

# the --option keys each method reads
OPTIONS = {
    "uniform": (),
    "greedy": (),
    "tas": tuple(f.name for f in dataclasses.fields(TASOptions)),
    "asng": tuple(_ASNG_DEFAULTS),
    "autoshrink": tuple(_AUTOSHRINK_DEFAULTS),
}


def check_options(method: str, options: dict) -> None:
    """Raise CompressError for a method the searchers do not know or an option it does not read."""
    if method not in SEARCHERS:
        raise CompressError(f"unknown method {method!r}: use one of {', '.join(SEARCHERS)}")
    unknown = sorted(set(options) - set(OPTIONS[method]))
    if unknown:
        known = ", ".join(OPTIONS[method]) or "none"
        raise CompressError(f"method {method} has no option {unknown[0]!r}; its options: {known}")


__all__ = [
    "OPTIONS",
    "check_options",
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

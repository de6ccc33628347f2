"""Searchers: pick an architecture in a search space that meets a budget.

Every searcher is ``fn(space, budget, context) -> SearchResult``; ``SEARCHERS`` maps the names
``--method`` accepts (:data:`METHODS`) to them and ``OPTIONS`` to the ``--option`` keys each reads.
The searchers are imported on first use, so that the command line (``compress bench`` on a board
without PyTorch included) can list the methods without importing torch.
"""
from importlib import import_module

from ..errors import CompressError

METHODS = ("uniform", "greedy", "tas", "asng", "autoshrink")

_EXPORTS = {
    "CategoricalASNG": ".asng",
    "asng_search": ".asng_search",
    "autoshrink_search": ".autoshrink",
    "SearchContext": ".base",
    "SearchResult": ".base",
    "greedy_search": ".greedy",
    "repair": ".greedy",
    "TASOptions": ".tas",
    "tas_search": ".tas",
    "uniform_search": ".uniform",
}


def _tables() -> dict:
    import dataclasses

    from .asng_search import DEFAULTS as asng_defaults
    from .asng_search import asng_search
    from .autoshrink import DEFAULTS as autoshrink_defaults
    from .autoshrink import autoshrink_search
    from .greedy import greedy_search
    from .tas import TASOptions, tas_search
    from .uniform import uniform_search

    searchers = {"uniform": uniform_search, "greedy": greedy_search, "tas": tas_search, "asng": asng_search,
                 "autoshrink": autoshrink_search}
    options = {"uniform": (), "greedy": (), "tas": tuple(f.name for f in dataclasses.fields(TASOptions)),
               "asng": tuple(asng_defaults), "autoshrink": tuple(autoshrink_defaults)}
    return {"SEARCHERS": searchers, "OPTIONS": options}


def _table(name: str) -> dict:
    if name not in globals():
        globals().update(_tables())
    return globals()[name]


def __getattr__(name: str):
    if name in ("SEARCHERS", "OPTIONS"):
        return _table(name)
    if name in _EXPORTS:
        globals()[name] = getattr(import_module(_EXPORTS[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return globals()[name]


def check_options(method: str, options: dict) -> None:
    """Raise CompressError for a method the searchers do not know or an option it does not read."""
    if method not in METHODS:
        raise CompressError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    reads = _table("OPTIONS")[method]
    unknown = sorted(set(options) - set(reads))
    if unknown:
        known = ", ".join(reads) or "none"
        raise CompressError(f"method {method} has no option {unknown[0]!r}; its options: {known}")


__all__ = ["METHODS", "OPTIONS", "SEARCHERS", "check_options", *_EXPORTS]

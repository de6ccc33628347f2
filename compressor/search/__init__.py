"""Searchers: pick an architecture in a search space that meets a budget.

Every method is a :class:`~compressor.search.base.Searcher` registered under its ``--method``
name (:mod:`.registry`), with its options a frozen dataclass (:mod:`.options`); iterative ones
run in the shared loop (:mod:`.loop`). ``SEARCHERS[method](space, budget, context)`` runs one
search; ``METHODS`` lists the names and ``OPTIONS`` the ``--option`` keys each reads. The
searchers are imported on first use, so that the command line (``compress bench`` on a board
without PyTorch included) can list the methods without importing torch.
"""
from functools import partial
from importlib import import_module

from .registry import BUILTIN, register, search, searcher_class

METHODS = tuple(BUILTIN)

_EXPORTS = {
    "CategoricalASNG": ".asng",
    "asng_search": ".asng_search",
    "autoshrink_search": ".autoshrink",
    "SearchContext": ".base",
    "SearchResult": ".base",
    "Searcher": ".base",
    "greedy_search": ".greedy",
    "refine": ".greedy",
    "repair": ".greedy",
    "LoopSearcher": ".loop",
    "SearchOptions": ".options",
    "option": ".options",
    "create": ".registry",
    "TASOptions": ".tas",
    "tas_search": ".tas",
    "uniform_search": ".uniform",
}


def __getattr__(name: str):
    if name == "SEARCHERS":
        from .registry import registered

        return {method: partial(search, method) for method in registered()}
    if name == "OPTIONS":
        from .registry import registered

        return {method: cls.Options.keys() for method, cls in registered().items()}
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = getattr(import_module(_EXPORTS[name], __name__), name)
    return globals()[name]


def check_options(method: str, options: dict) -> None:
    """Raise CompressError for a method the searchers do not know, or an option it does not read
    or of the wrong type or range."""
    searcher_class(method).Options.from_dict(options, method)


__all__ = ["METHODS", "OPTIONS", "SEARCHERS", "check_options", "register", "search", *_EXPORTS]

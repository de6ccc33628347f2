"""The searcher registry: every method registers its :class:`~compressor.search.base.Searcher`
class under its ``--method`` name with :func:`register`, and :func:`create` is the one factory.

The built-in methods live in modules imported on first use (:data:`BUILTIN`), so that the
command line can list them without importing torch.
"""
from __future__ import annotations

from importlib import import_module

from compress_base.errors import CompressError

BUILTIN = {"uniform": ".uniform", "greedy": ".greedy", "tas": ".tas", "asng": ".asng_search",
           "autoshrink": ".autoshrink"}
_REGISTRY: dict[str, type] = {}


def register(name: str):
    """Class decorator: make ``cls`` the searcher of ``--method name``."""
    def deco(cls):
        if _REGISTRY.get(name, cls) is not cls:
            raise ValueError(f"a searcher named {name!r} is registered already")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def registered() -> dict[str, type]:
    """Every registered searcher class by name (the built-in ones imported first)."""
    for module in BUILTIN.values():
        import_module(module, __package__)
    return dict(_REGISTRY)


def searcher_class(method: str) -> type:
    """The class registered for ``method``; CompressError for a method nobody registered."""
    if method in BUILTIN and method not in _REGISTRY:
        import_module(BUILTIN[method], __package__)
    if method not in _REGISTRY:
        known = ", ".join([*BUILTIN, *(n for n in _REGISTRY if n not in BUILTIN)])
        raise CompressError(f"unknown method {method!r}: use one of {known}")
    return _REGISTRY[method]


def create(method: str, space, budget, context=None):
    """The searcher of ``method`` for one search, its ``context.options`` parsed and validated."""
    from .base import SearchContext

    cls = searcher_class(method)
    context = context if context is not None else SearchContext()
    return cls(space, budget, context, cls.Options.from_dict(context.options, method))


def search(method: str, space, budget, context=None):
    """Run ``method`` on ``space`` under ``budget``: a :class:`~compressor.search.base.SearchResult`."""
    return create(method, space, budget, context).search()

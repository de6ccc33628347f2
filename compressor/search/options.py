"""Method options: each searcher declares its ``--option key=value`` settings as a frozen dataclass
of :class:`SearchOptions`, and :meth:`SearchOptions.from_dict` parses and validates them all alike.

A field's type annotation (``float``, ``int``, ``bool``, ``str``, ``tuple`` of floats, each maybe
``| None``) says how a value is read: the CLI hands over JSON-decoded values, or the text itself
where it is not JSON, so ``"0.1"``, ``"true"`` and ``"0.5,1.0"`` are read as well. Its metadata
(:func:`option`) bounds it. Every problem is one :class:`~compressor.errors.CompressError` line
naming the method, the key and what it must be.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass

from compress_base.errors import CompressError

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def option(default, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False, finite: bool = True, choices: tuple | None = None, length: int | None = None):
    """A dataclass field with bounds: ``low``/``high`` (open with ``low_open``/``high_open``),
    ``finite=False`` to allow infinity, ``choices`` for a string, ``length`` for a tuple (whose
    every item the bounds apply to)."""
    meta = {"low": low, "high": high, "low_open": low_open, "high_open": high_open, "finite": finite,
            "choices": choices, "length": length}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class SearchOptions:
    """A method's settings; subclasses are frozen dataclasses whose fields are the option keys."""

    method: typing.ClassVar[str] = ""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, options: dict | None, method: str | None = None) -> SearchOptions:
        """The options in ``options`` (every other key at its default), parsed and validated."""
        method = method or cls.method
        options = dict(options or {})
        unknown = sorted(set(options) - set(cls.keys()))
        if unknown:
            raise CompressError(f"method {method} has no option {unknown[0]!r}; its options: "
                                f"{', '.join(cls.keys()) or 'none'}")
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in options:
                values[f.name] = _parse(method, f, hints[f.name], options[f.name])
        opts = cls(**values)
        problem = opts.check()
        if problem:
            key, why = problem
            raise CompressError(f"{method} option {key}={getattr(opts, key)!r} {why}")
        return opts

    def check(self) -> tuple[str, str] | None:
        """(key, what it must be) for a problem between options; None when they agree."""
        return None


def _parse(method: str, f: dataclasses.Field, hint, value):
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    optional = type(None) in kinds
    kind = next(k for k in kinds if k is not type(None))
    meta = f.metadata
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise _bad(method, f, value, _want(kind, meta))
    try:
        out = _convert(kind, value, meta)
    except (TypeError, ValueError):
        raise _bad(method, f, value, _want(kind, meta)) from None
    return out


def _convert(kind, value, meta):
    if typing.get_origin(kind) is tuple or kind is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        elif isinstance(value, (int, float)):
            value = [value]
        out = tuple(_number(float, v, meta) for v in value)
        if not out or (meta.get("length") is not None and len(out) != meta["length"]):
            raise ValueError(value)
        return out
    if kind is bool:
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise ValueError(value)
    if kind is str:
        if not isinstance(value, str) or (meta.get("choices") and value not in meta["choices"]):
            raise ValueError(value)
        return value
    return _number(kind, value, meta)


def _number(kind, value, meta):
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(value)
    x = float(value)
    if math.isnan(x) or (meta.get("finite", True) and not math.isfinite(x)):
        raise ValueError(value)
    if kind is int:
        if not math.isfinite(x) or x != int(x):
            raise ValueError(value)
        x = int(x)
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (x < low or (x == low and meta.get("low_open"))):
        raise ValueError(value)
    if high is not None and (x > high or (x == high and meta.get("high_open"))):
        raise ValueError(value)
    return x


def _want(kind, meta) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(meta["choices"])
    item = {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(kind, "a list of numbers")
    low, high = meta.get("low"), meta.get("high")
    if low is not None:
        item += f" {'>' if meta.get('low_open') else '>='} {low:g}"
    if high is not None:
        item += f"{' and' if low is not None else ''} {'<' if meta.get('high_open') else '<='} {high:g}"
    if meta.get("length"):
        item += f" ({meta['length']} of them)"
    return item


def _bad(method: str, f: dataclasses.Field, value, want: str) -> CompressError:
    default = f.default
    shown = f"[{','.join(f'{v:g}' for v in default)}]" if isinstance(default, tuple) else default
    return CompressError(f"{method} option {f.name}={value!r} must be {want}, e.g. {f.name}={shown}")


@dataclass(frozen=True)
class NoOptions(SearchOptions):
    """A method without settings."""

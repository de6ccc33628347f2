"""Parsing of human-friendly sizes, latencies and input shapes (``300M``, ``4ms``, ``3x224x224``) and of
budgets that are a count or a fraction of the original (``300M``, ``50%``)."""
from __future__ import annotations

import math
import re
from decimal import Decimal

from compress_base.errors import CompressError

_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*$")
_LAT_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|us|s)?\s*$")
_PERCENT_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%\s*$")


def parse_size(text: str | int | float, what: str = "size") -> int:
    """Parse ``300M``, ``1.5G``, ``250K`` or a plain number into a positive integer count."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _SIZE_RE.match(str(text))
        if not m:
            raise CompressError(
                f"{what} {text!r} is not a count: use a positive number with an optional "
                "K, M or G suffix, e.g. 300M or 1.5G"
            )
        value = float(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if not math.isfinite(value) or value > 1e18:
        raise CompressError(f"{what} {text!r} is too large: use e.g. 300M or 1.5G")
    if value < 1:
        raise CompressError(f"{what} {text!r} must be at least 1: use e.g. 300M or 1.5G")
    return int(round(value))


def parse_count_or_fraction(value: str | int | float, what: str = "budget") -> int | float:
    """A budget that is a count or a fraction of the original model's: an ``int`` count for
    ``300M``, ``1.5G``, ``300_000_000`` or a float above 1 (``3e8``); a ``float`` fraction in
    (0, 1] for a percentage string (``50%``) or a float up to 1 (``0.5``)."""
    hint = "use a count such as 300M or 300000000, or a fraction of the original such as 50% (0.5 in Python)"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise CompressError(f"{what} {value!r} is not a count or a fraction: {hint}")
    if isinstance(value, str) and (m := _PERCENT_RE.match(value)):
        percent = Decimal(m.group(1))
        if not 0 < percent <= 100:
            raise CompressError(f"{what} {value!r} must be above 0% and at most 100% of the original, e.g. 50%")
        return float(percent / 100)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if not m:
            raise CompressError(f"{what} {value!r} is not a count or a fraction: {hint}")
        if float(m.group(1)) * _SUFFIX[m.group(2).upper()] < 1:
            raise CompressError(f"{what} {value!r} must be at least 1: write a count as e.g. 300M, a fraction of the "
                                "original as a percentage (e.g. 50%)")
    elif not value > 0:  # NaN included
        raise CompressError(f"{what} {value!r} must be positive: {hint}")
    elif isinstance(value, float) and value <= 1:
        return value
    elif isinstance(value, int) and value <= 10**18:
        return value  # exact, also beyond a float's 53 bits
    return parse_size(value, what)


def fraction_of(fraction: float, total: int) -> int:
    """``floor(fraction * total)``, with ``fraction`` taken as the decimal it prints as (``0.29`` is
    29/100 exactly, not the binary float just below it)."""
    return math.floor(Decimal(repr(fraction)) * total)


def parse_latency_ms(text: str | float) -> float:
    """Parse ``4ms``, ``800us``, ``0.8`` (milliseconds) into milliseconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), "ms"
    else:
        m = _LAT_RE.match(str(text))
        if not m:
            raise CompressError(
                f"latency {text!r} is not a duration: use e.g. 4ms, 0.8ms or 800us"
            )
        value, unit = float(m.group(1)), m.group(2) or "ms"
    value *= {"ms": 1.0, "us": 1e-3, "s": 1e3}[unit]
    if not math.isfinite(value) or value > 1e9:
        raise CompressError(f"latency {text!r} is too large: use e.g. 4ms")
    if value <= 0:
        raise CompressError(f"latency {text!r} must be positive: use e.g. 4ms")
    return value


def parse_shape(text: str | tuple | list) -> tuple[int, int, int]:
    """Parse ``3x224x224`` (channels x height x width) into a tuple of three positive ints."""
    parts = list(text) if isinstance(text, (tuple, list)) else re.split(r"[x,\s]+", str(text).strip().lower())
    try:
        dims = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise CompressError(
            f"input shape {text!r} is not CxHxW: give three positive integers, e.g. 3x224x224"
        )
    return dims  # type: ignore[return-value]


def format_count(n: float) -> str:
    """Format a count with a K/M/G suffix and three significant digits (``4.09G``)."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.0f}"

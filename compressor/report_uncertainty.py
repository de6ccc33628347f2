"""How sure a report's figures are: the standard error of an accuracy, the range of a speed-up over
interleaved rounds, and numbers written to the digits their uncertainty supports.

Accuracies are fractions (0..1) of ``n`` validation images; their standard error is the binomial
``sqrt(p (1 - p) / n)``, and that of a difference of two accuracies ``sqrt(se1² + se2²)`` (the
models are scored on the same images, so this is an upper bound). Latencies are
:class:`exporters.stats.LatencyStats`; with interleaved rounds (``rounds``: each round's p50) the
spread of the rounds is the uncertainty of the p50, and the per-round ratios give a speed-up's range.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from exporters.stats import LatencyStats


def accuracy_se(p: float, n: int) -> float:
    """Binomial standard error of an accuracy ``p`` (0..1) measured on ``n`` images."""
    return math.sqrt(p * (1.0 - p) / n) if n > 0 else math.inf


def difference_se(p: float, q: float, n: int) -> float:
    """Standard error of ``p - q``, two accuracies on ``n`` images each (an upper bound when paired)."""
    return math.hypot(accuracy_se(p, n), accuracy_se(q, n))


@dataclass(frozen=True)
class Speedup:
    """``baseline p50 / compressed p50``; ``low`` and ``high`` the smallest and largest per-round
    ratio (None without rounds)."""

    ratio: float
    low: float | None = None
    high: float | None = None

    @property
    def relative_range(self) -> float | None:
        """``(high - low) / ratio``: how far apart the rounds put the speed-up."""
        return None if self.low is None else (self.high - self.low) / self.ratio

    def to_dict(self) -> dict:
        return {"ratio": self.ratio, "low": self.low, "high": self.high}


def speedup(baseline: LatencyStats | None, compressed: LatencyStats | None) -> Speedup | None:
    """The speed-up of ``compressed`` over ``baseline`` with its per-round range; None unless both were measured."""
    if baseline is None or compressed is None or compressed.p50 <= 0:
        return None
    ratio = baseline.p50 / compressed.p50
    if baseline.rounds and len(baseline.rounds) == len(compressed.rounds):
        ratios = [b / c for b, c in zip(baseline.rounds, compressed.rounds) if c > 0]
        if ratios:
            return Speedup(ratio, min(ratios), max(ratios))
    return Speedup(ratio)


def p50_uncertainty(stats: LatencyStats) -> float:
    """The uncertainty of a p50 (ms): half the range of the rounds' p50s, or without rounds the
    standard error of a median of ``runs`` times (``1.25 std / sqrt(runs)``)."""
    if len(stats.rounds) > 1:
        return (max(stats.rounds) - min(stats.rounds)) / 2
    return 1.25 * stats.std / math.sqrt(stats.runs) if stats.runs else math.inf


def round_spread(stats: LatencyStats) -> float | None:
    """``(max - min) / median`` of the rounds' p50s; None with fewer than two rounds."""
    if len(stats.rounds) < 2 or stats.p50 <= 0:
        return None
    return (max(stats.rounds) - min(stats.rounds)) / stats.p50


def decimals_for(err: float | None, fallback: int = 3) -> int:
    """Decimal places that show ``err`` to one significant digit (two when that digit is 1); with no
    usable ``err`` (None, 0, infinite), ``fallback``."""
    if err is None or not math.isfinite(err) or err <= 0:
        return fallback
    exponent = math.floor(math.log10(err))
    leading = int(err / 10 ** exponent)
    return max(0, -exponent + (1 if leading == 1 else 0))


def fixed(value: float, decimals: int) -> str:
    """``value`` with ``decimals`` decimal places."""
    return f"{value:.{decimals}f}"


def with_error(value: float, err: float | None, unit: str = "") -> str:
    """``value ± err`` with both rounded to the digits ``err`` supports: ``10.3 ± 0.4 ms``."""
    d = decimals_for(err)
    if err is None or not math.isfinite(err) or err <= 0:
        return f"{value:.3g}{unit}"
    return f"{fixed(value, d)} ± {fixed(err, d)}{unit}"


def latency_text(stats: LatencyStats, unit: str = " ms") -> str:
    """A p50 to the digits its rounds support, with their range: ``10.3 ms (rounds 9.8-11.2)``
    (``unit`` after the p50: none where a column's title names it)."""
    d = decimals_for(p50_uncertainty(stats))
    if len(stats.rounds) > 1:
        return f"{fixed(stats.p50, d)}{unit} (rounds {fixed(min(stats.rounds), d)}-{fixed(max(stats.rounds), d)})"
    return f"{fixed(stats.p50, d)}{unit}"


def percentile_text(stats: LatencyStats, key: str = "p50") -> str:
    """The p50, p90 or p99 (``key``) in ms, without a unit, to the digits the p50's uncertainty
    supports (a tail is no surer than the median); three decimals where that is unknown."""
    return fixed(getattr(stats, key), decimals_for(p50_uncertainty(stats)))


def speedup_text(s: Speedup) -> str:
    """``3.1x (2.8-3.4)``: the ratio and its per-round range to the digits the range supports."""
    if s.low is None:
        return f"{s.ratio:.2g}x"
    d = decimals_for((s.high - s.low) / 2, fallback=2)
    return f"{fixed(s.ratio, d)}x ({fixed(s.low, d)}-{fixed(s.high, d)})"


def accuracy_text(p: float, n: int | None) -> str:
    """``96.7% ± 0.6 (n=1000)``: percent, with the standard error in points where ``n`` is known."""
    if not n:
        return f"{100 * p:.1f}%"
    se = 100 * accuracy_se(p, n)
    if se <= 0:  # every image right (or wrong): the binomial error says nothing
        return f"{100 * p:.1f}% (n={n})"
    d = min(decimals_for(se), 2)
    return f"{fixed(100 * p, d)}% ± {fixed(se, d)} (n={n})"


__all__ = ["Speedup", "accuracy_se", "accuracy_text", "decimals_for", "difference_se", "latency_text",
           "p50_uncertainty", "percentile_text", "round_spread", "speedup", "speedup_text", "with_error"]

"""Budgets: upper bounds on metrics (MACs, params, latency) that a compressed architecture must meet.

Every bound names a :class:`~compressor.costs.Metric`; searchers read the bounds and the metrics
through :meth:`Budget.bounds` and :meth:`Budget.metrics` and treat them all alike. A latency bound
needs a latency model (:class:`~compressor.latency.LatencyModel`, the ``latency`` metric): the
pipeline re-measures the result on the target afterwards, and a model recalibrated on a
measurement is a new object in a new budget (:meth:`Budget.calibrated`). A MAC or params bound
given as a fraction of the original model's (``50%``) is turned into a count once the search space
is built (:meth:`Budget.resolved`).
"""
from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from compress_base.errors import CompressError

from .architecture import Architecture
from .units import format_count, fraction_of, parse_count_or_fraction, parse_latency_ms

if TYPE_CHECKING:  # costs imports torch; a budget is read without it (compress bench)
    from .costs import Metric

log = logging.getLogger(__name__)

_UNITS = {"macs": "MACs", "params": "params", "latency_ms": "ms"}
_OBJECTIVE = ("latency_ms", "macs")  # what a score trades accuracy against: the first bounded, else MACs
_COUNTS = ("macs", "params")  # the bounds that may be a fraction of the original


@dataclass(frozen=True)
class Budget:
    """Upper bounds; ``None`` means unconstrained.

    ``macs`` and ``params`` take a count (``300_000_000``, ``"300M"``, a float above 1 such as
    ``3e8``) or a fraction of the original model's (``"50%"``, or a float in (0, 1] such as
    ``0.5``: a float up to 1 is always a fraction). A count is kept in ``macs``/``params`` as an
    int, a fraction in ``macs_fraction``/``params_fraction`` until :meth:`resolved`.
    ``latency_ms`` takes milliseconds or a string such as ``"4ms"``. Anything else is one
    CompressError.
    """

    macs: int | None = None
    params: int | None = None
    latency_ms: float | None = None
    latency: object | None = field(default=None, compare=False, repr=False)  # predictor of latency in ms
    macs_fraction: float | None = None
    params_fraction: float | None = None

    def __post_init__(self):
        for key in _COUNTS:
            value, fraction = getattr(self, key), getattr(self, f"{key}_fraction")
            if value is not None and fraction is not None:
                raise CompressError(f"budget {key} is given twice, as {key} and {key}_fraction: give one")
            if fraction is not None:
                fraction = _check_fraction(fraction, f"budget {key}_fraction")
            if value is not None:
                value = parse_count_or_fraction(value, f"budget {key}")
                if isinstance(value, float):
                    value, fraction = None, value
            object.__setattr__(self, key, value)
            object.__setattr__(self, f"{key}_fraction", fraction)
        lat = self.latency_ms
        if isinstance(lat, str):
            object.__setattr__(self, "latency_ms", lat := parse_latency_ms(lat))
        if lat is not None and (isinstance(lat, bool) or not isinstance(lat, (int, float))
                                or not math.isfinite(lat) or not 0 < lat <= 1e9):
            raise CompressError(f"budget latency_ms must be a positive, finite number of milliseconds, got {lat!r} "
                                "(or a string such as '4ms')")
        if all(getattr(self, k) is None for k in (*_COUNTS, "latency_ms", "macs_fraction", "params_fraction")):
            raise CompressError("no budget given: pass --budget-macs, --budget-params and/or --budget-latency "
                                "(e.g. 300M, 50%, 2.5M, 4ms)")

    @property
    def relative(self) -> bool:
        """Whether a bound is a fraction of the original still to be :meth:`resolved`."""
        return self.macs_fraction is not None or self.params_fraction is not None

    def resolved(self, space) -> Budget:
        """This budget with each fraction of the original turned into a count: ``floor(fraction x``
        the full model's MACs or params in ``space``), at least 1. Without fractions, this budget."""
        if not self.relative:
            return self
        full = space.full()
        counts = {}
        for key in _COUNTS:
            fraction = getattr(self, f"{key}_fraction")
            if fraction is not None:
                total = space.macs(full) if key == "macs" else space.params(full)
                counts[key] = max(1, fraction_of(fraction, total))
                log.info("budget %s: %g%% of the original's %s = %s", key, 100 * fraction, format_count(total),
                         format_count(counts[key]))
        return replace(self, macs_fraction=None, params_fraction=None, **counts)

    def with_latency_model(self, predictor) -> Budget:
        """The same bounds, with latency predicted by ``predictor``."""
        return replace(self, latency=predictor)

    def to_dict(self) -> dict:
        """The bounds as JSON: macs, params, latency_ms, and the fractions still to resolve, if any."""
        out = {"macs": self.macs, "params": self.params, "latency_ms": self.latency_ms}
        out.update({f"{k}_fraction": getattr(self, f"{k}_fraction") for k in _COUNTS
                    if getattr(self, f"{k}_fraction") is not None})
        return out

    def bounds(self) -> dict[str, float]:
        """The active bounds, by metric name."""
        if self.relative:
            raise CompressError("a budget given as a fraction of the original (e.g. 50%) has no bounds until it is "
                                "resolved against the model: use budget.resolved(space)")
        return {k: v for k, v in self.to_dict().items() if v is not None}

    def metric(self, space, name: str) -> Metric:
        """The metric ``name`` ("macs", "params" or "latency_ms") of ``space``."""
        from .costs import MacsMetric, ParamsMetric

        if name == "macs":
            return MacsMetric(space)
        if name == "params":
            return ParamsMetric(space)
        if self.latency is None:
            raise CompressError("a latency budget needs a latency model: build one with `compress lut` "
                                "or let the run measure it on the target")
        return self.latency

    def metrics(self, space) -> dict[str, Metric]:
        """The metric of every active bound."""
        return {k: self.metric(space, k) for k in self.bounds()}

    def objective(self, space) -> Metric:
        """The cost a searcher's score trades accuracy against: the target's latency when it is
        bounded, else MACs."""
        bounds = self.bounds()
        return self.metric(space, next((k for k in _OBJECTIVE if k in bounds), "macs"))

    def costs(self, space, arch: Architecture) -> dict:
        """The budgeted costs of ``arch`` ({"macs", "params", "latency_ms"} for the active bounds)."""
        widths, kept = space.encode(arch)
        return {k: m.value_encoded(widths, kept) for k, m in self.metrics(space).items()}

    def calibrated(self, space, arch: Architecture, measure) -> tuple[Budget, float | None]:
        """With a latency bound: ``arch`` measured on the target by ``measure(arch) -> ms`` and a new
        budget whose latency model predicts that measurement for it (rescaled by
        measured/predicted); else this budget and None."""
        if self.latency_ms is None or measure is None:
            return self, None
        measured = float(measure(arch))
        predicted = self.latency.predict(arch)
        log.info("measured %.3f ms where %.3f ms was predicted", measured, predicted)
        if predicted <= 0:
            return self, measured
        return self.with_latency_model(self.latency.rescaled(measured / predicted)), measured

    def calibration(self) -> list[float] | None:
        """What :meth:`calibrated` changed (the latency model's coefficients), to save with a search's state."""
        return self.latency.coefficients() if self.latency is not None else None

    def with_calibration(self, calibration: list[float] | None) -> Budget:
        """This budget with a :meth:`calibration` restored."""
        if calibration is None:
            return self
        return self.with_latency_model(self.latency.with_coefficients(calibration))

    def fits(self, space, arch: Architecture) -> bool:
        """Whether ``arch`` meets every active bound."""
        return all(v <= getattr(self, k) for k, v in self.costs(space, arch).items())

    def excess(self, space, arch: Architecture) -> float:
        """Largest ratio cost/bound over the active bounds (<= 1 means within budget)."""
        bounds = self.bounds()
        return max(v / bounds[k] for k, v in self.costs(space, arch).items())

    def check_reachable(self, space) -> None:
        """Raise CompressError when even the smallest architecture in the space is over budget."""
        smallest = space.smallest()
        for key, value in self.costs(space, smallest).items():
            bound = getattr(self, key)
            if value > bound:
                unit = _UNITS[key]
                shown = (f"{bound:g} ms", f"{value:.3g} ms") if key == "latency_ms" else (
                    f"{format_count(bound)} {unit}", f"{format_count(value)} {unit}")
                least = f"{value:.3g}ms" if key == "latency_ms" else str(value)
                raise CompressError(
                    f"budget of {shown[0]} is below the smallest architecture in the search space "
                    f"({shown[1]} at input {'x'.join(map(str, space.input_shape))}): "
                    f"raise the budget to at least {least}"
                )


def _check_fraction(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and 0 < value <= 1):
        raise CompressError(f"{what} must be a fraction of the original above 0 and at most 1 (0.5 is 50%), "
                            f"got {value!r}")
    return float(value)

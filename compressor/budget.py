"""Budgets: upper bounds on MACs, params and latency that a compressed architecture must meet.

A latency bound needs a latency predictor (``predict(arch) -> ms``, see ``compressor.latency``):
searchers compare predicted latency with the bound exactly as they compare MACs, and the
pipeline re-measures the result on the target afterwards.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .architecture import Architecture
from .errors import CompressError
from .units import format_count

_UNITS = {"macs": "MACs", "params": "params", "latency_ms": "ms"}


@dataclass(frozen=True)
class Budget:
    """Upper bounds; ``None`` means unconstrained."""

    macs: int | None = None
    params: int | None = None
    latency_ms: float | None = None
    latency: object | None = field(default=None, compare=False, repr=False)  # predictor of latency in ms

    def __post_init__(self):
        if self.macs is None and self.params is None and self.latency_ms is None:
            raise CompressError("no budget given: pass --budget-macs, --budget-params and/or --budget-latency "
                                "(e.g. 300M, 2.5M, 4ms)")
        for key in ("macs", "params"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1e18):
                raise CompressError(f"budget {key} must be a whole number from 1 to 1e18, got {value!r} "
                                    "(compressor.units.parse_size reads '300M')")
        lat = self.latency_ms
        if lat is not None and (isinstance(lat, bool) or not isinstance(lat, (int, float))
                                or not math.isfinite(lat) or not 0 < lat <= 1e9):
            raise CompressError(f"budget latency_ms must be a positive, finite number of milliseconds, got {lat!r} "
                                "(compressor.units.parse_latency_ms reads '4ms')")

    def with_latency_model(self, predictor) -> "Budget":
        """The same bounds, with latency predicted by ``predictor``."""
        return replace(self, latency=predictor)

    def to_dict(self) -> dict:
        return {"macs": self.macs, "params": self.params, "latency_ms": self.latency_ms}

    def costs(self, space, arch: Architecture) -> dict:
        """The budgeted costs of ``arch`` ({"macs", "params", "latency_ms"} for the active bounds)."""
        out: dict = {}
        if self.macs is not None:
            out["macs"] = space.macs(arch)
        if self.params is not None:
            out["params"] = space.params(arch)
        if self.latency_ms is not None:
            if self.latency is None:
                raise CompressError("a latency budget needs a latency model: build one with `compress lut` "
                                    "or let the run measure it on the target")
            out["latency_ms"] = float(self.latency.predict(arch))
        return out

    def fits(self, space, arch: Architecture) -> bool:
        """Whether ``arch`` meets every active bound."""
        return all(v <= getattr(self, k) for k, v in self.costs(space, arch).items())

    def excess(self, space, arch: Architecture) -> float:
        """Largest ratio cost/bound over the active bounds (<= 1 means within budget)."""
        return max(v / getattr(self, k) for k, v in self.costs(space, arch).items())

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

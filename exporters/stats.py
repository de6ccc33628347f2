"""Latency statistics of one measurement, with the settings needed to reproduce it."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Latency of ``runs`` timed inferences after ``warmup`` untimed ones; times in milliseconds.

    ``std`` is the sample standard deviation (0 for a single run); ``throughput`` is inferences
    per second, ``batch * 1000 / mean``.
    """

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    throughput: float
    warmup: int
    runs: int
    batch: int
    input_shape: tuple[int, ...]
    runtime: str
    device: str
    versions: dict = field(default_factory=dict)
    threads: int = 0
    settings: dict = field(default_factory=dict)

    @classmethod
    def from_times(cls, times_ms: Sequence[float], *, batch: int, **meta) -> LatencyStats:
        """Summarise per-run times (ms); ``meta`` fills the remaining fields except ``runs``."""
        t = np.asarray(times_ms, dtype=float)
        if t.ndim != 1 or t.size == 0 or t.min() <= 0:
            raise ValueError(f"times_ms must be a non-empty list of positive times, got {times_ms!r}")
        summary = summarize_ms(t)
        return cls(
            **summary,
            std=float(t.std(ddof=1)) if t.size > 1 else 0.0,
            throughput=batch * 1000.0 / summary["mean"],
            runs=int(t.size),
            batch=batch,
            **meta,
        )

    def to_dict(self) -> dict:
        """Plain-data view (JSON-serialisable) for reports."""
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


def summarize_ms(times_ms: Sequence[float]) -> dict:
    """``{p50, p90, p99, mean}`` of times in ms (linear-interpolated percentiles)."""
    t = np.asarray(times_ms, dtype=float)
    if t.ndim != 1 or t.size == 0 or t.min() < 0:
        raise ValueError(f"times_ms must be a non-empty list of non-negative times, got {times_ms!r}")
    p50, p90, p99 = (float(v) for v in np.percentile(t, [50, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99, "mean": float(t.mean())}

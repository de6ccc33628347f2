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
    per second, ``batch * 1000 / mean``. ``rounds`` holds the p50 of each round when the figures
    come from interleaved rounds (:meth:`from_rounds`); empty for one block of runs.
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
    rounds: list[float] = field(default_factory=list)

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

    @classmethod
    def from_rounds(cls, rounds: Sequence[LatencyStats]) -> LatencyStats:
        """One measurement from rounds of the same model (taken in turn with other models, so that
        drift of the machine hits them all): p50, p90 and p99 are the medians of the rounds' own,
        mean and std those of all runs pooled, ``rounds`` the rounds' p50s. The other fields are the
        last round's (whose settings may hold a node profile); ``warmup`` is per round."""
        if not rounds:
            raise ValueError("from_rounds needs at least one round")
        n = np.array([r.runs for r in rounds], dtype=float)
        means = np.array([r.mean for r in rounds])
        mean = float((n * means).sum() / n.sum())
        # pooled variance: within-round sums of squares plus between-round spread of the means
        ss = sum((r.runs - 1) * r.std ** 2 for r in rounds) + float((n * (means - mean) ** 2).sum())
        total = int(n.sum())
        last = rounds[-1]
        return dataclasses.replace(
            last, **{k: float(np.median([getattr(r, k) for r in rounds])) for k in ("p50", "p90", "p99")},
            mean=mean, std=float(np.sqrt(ss / (total - 1))) if total > 1 else 0.0,
            throughput=last.batch * 1000.0 / mean, runs=total, rounds=[r.p50 for r in rounds])

    def to_dict(self) -> dict:
        """Plain-data view (JSON-serialisable) for reports; ``rounds`` only when there were rounds."""
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        if not self.rounds:
            del d["rounds"]
        return d


def summarize_ms(times_ms: Sequence[float]) -> dict:
    """``{p50, p90, p99, mean}`` of times in ms (linear-interpolated percentiles)."""
    t = np.asarray(times_ms, dtype=float)
    if t.ndim != 1 or t.size == 0 or t.min() < 0:
        raise ValueError(f"times_ms must be a non-empty list of non-negative times, got {times_ms!r}")
    p50, p90, p99 = (float(v) for v in np.percentile(t, [50, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99, "mean": float(t.mean())}

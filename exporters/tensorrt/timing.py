"""Timing an engine the way trtexec does, and LatencyStats from the event times.

Per run, CUDA events on one stream bracket the host-to-device copies, ``execute_async_v3`` (the
GPU compute time) and the device-to-host copies. A run's latency is the sum of the three
(trtexec's "Latency"); the compute-only and copy figures go into ``LatencyStats.settings``.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from compress_base.errors import CompressError
from exporters.stats import LatencyStats, summarize_ms
from exporters.tensorrt.bindings import Binding


def time_engine(context, backend, inputs: list[Binding], outputs: list[Binding], warmup: int, runs: int) -> dict:
    """Run ``warmup`` untimed then ``runs`` timed inferences; per-run times in ms.

    Returns ``{"h2d": [...], "compute": [...], "d2h": [...], "enqueue": [...]}``: CUDA-event
    intervals on one stream (H2D copies | execute_async_v3 | D2H copies) and the host time of
    the ``execute_async_v3`` call. Outputs are left in the bindings' host buffers.
    """
    stream = backend.stream()
    handle = backend.stream_handle(stream)
    events = [backend.event() for _ in range(4)]
    times: dict[str, list[float]] = {"h2d": [], "compute": [], "d2h": [], "enqueue": []}

    def once(keep: bool) -> None:
        backend.record(events[0], stream)
        for b in inputs:
            backend.h2d(b.device, b.host, stream)
        backend.record(events[1], stream)
        t0 = time.perf_counter()
        ok = context.execute_async_v3(handle)
        enqueue = (time.perf_counter() - t0) * 1e3
        if not ok:
            raise CompressError(
                "TensorRT failed to run the engine (execute_async_v3 returned False); see the TensorRT log"
            )
        backend.record(events[2], stream)
        for b in outputs:
            backend.d2h(b.host, b.device, stream)
        backend.record(events[3], stream)
        backend.synchronize(events[3])
        if keep:
            times["h2d"].append(backend.elapsed_ms(events[0], events[1]))
            times["compute"].append(backend.elapsed_ms(events[1], events[2]))
            times["d2h"].append(backend.elapsed_ms(events[2], events[3]))
            times["enqueue"].append(enqueue)

    for _ in range(warmup):
        once(False)
    for _ in range(runs):
        once(True)
    return times


def assemble_stats(
    h2d_ms: Sequence[float],
    compute_ms: Sequence[float],
    d2h_ms: Sequence[float],
    *,
    enqueue_ms: Sequence[float] | None = None,
    batch: int,
    input_shape: Sequence[int],
    warmup: int,
    device: str,
    versions: dict,
    settings: dict | None = None,
    runtime: str = "tensorrt",
) -> LatencyStats:
    """LatencyStats of end-to-end latency (H2D + GPU compute + D2H per run), trtexec-style.

    The compute-only, copy and host-enqueue summaries go into ``settings`` as
    ``gpu_compute_ms``, ``h2d_ms``, ``d2h_ms`` and ``enqueue_ms``.
    """
    h2d, comp, d2h = (np.asarray(a, dtype=float) for a in (h2d_ms, compute_ms, d2h_ms))
    if not h2d.shape == comp.shape == d2h.shape or comp.ndim != 1:
        raise ValueError("h2d_ms, compute_ms and d2h_ms must be lists of the same length")
    e2e = h2d + comp + d2h
    extra = {
        "latency": "end-to-end per run: host-to-device copies + GPU compute + device-to-host copies, "
        "CUDA events on one stream (trtexec's Latency); throughput = batch / mean latency",
        "gpu_compute_ms": summarize_ms(comp),
        "h2d_ms": summarize_ms(h2d),
        "d2h_ms": summarize_ms(d2h),
    }
    if enqueue_ms is not None:
        extra["enqueue_ms"] = summarize_ms(enqueue_ms)
    return LatencyStats.from_times(
        list(e2e),
        batch=batch,
        input_shape=tuple(int(d) for d in input_shape),
        warmup=warmup,
        runtime=runtime,
        device=device,
        versions=dict(versions),
        threads=0,
        settings={**extra, **(settings or {})},
    )

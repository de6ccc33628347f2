"""The deployment target as this machine sees it: the profile, whether it can be measured here,
with which runtime, and the one function that measures an ONNX file on it."""
from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from pathlib import Path

from compress_base.errors import CompressError
from exporters.runners import make_runner
from exporters.runtime_choice import choose_runtime
from exporters.stats import LatencyStats
from profiles import Profile, host_model, load_profile

log = logging.getLogger(__name__)


def measurable_here(profile: Profile) -> bool:
    """Whether this machine is the profile's device and has one of its runtimes (the one
    :func:`~exporters.runtime_choice.choose_runtime` picks measures here)."""
    if not profile.runs_here():
        return False
    try:
        choose_runtime(profile)
    except CompressError:
        return False
    return True


def resolve_target(name: str, offline_ok: bool = False) -> Profile:
    """Load the target profile and check that this machine can measure on it.

    With ``offline_ok`` (a MAC or params budget, or a latency table measured on the device), a
    target this machine cannot measure is accepted: the search needs no measurement, and the result
    is measured on the device afterwards (``compress bench``, merged with ``compress report``).
    """
    profile = load_profile(name)
    if offline_ok and not measurable_here(profile):
        log.warning("this machine cannot measure on target %s: the search works without it; measure the result "
                    "there with `compress bench model.onnx --target %s`", profile.name, profile.name)
        return profile
    if not profile.runs_here():
        raise CompressError(
            f"target {profile.name!r} is a {profile.host_model} board and this machine is {host_model()!r}: "
            f"run on the board, or measure there with `compress bench` and compare with `compress report`"
        )
    choose_runtime(profile)  # one line naming the runtimes when none of them is usable here
    return profile


def measure_onnx(onnx_path: Path, profile: Profile, shape, runs: int | None, slowest: int = 0) -> LatencyStats:
    """Latency statistics of an ONNX file on the target (``slowest``: also profile that many nodes)."""
    runner = make_runner(choose_runtime(profile), threads=profile.measure.threads, precision=profile.precision,
                         profile_nodes=slowest)
    with _runner_lines_hidden():
        stats = runner.measure(onnx_path, shape, batch=profile.batch, warmup=profile.measure.warmup,
                               runs=runs or profile.measure.runs)
    log.info("latency of %s (%s): p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, %d runs", Path(onnx_path).name,
             stats.runtime, stats.p50, stats.p90, stats.p99, stats.runs)
    return stats


ROUNDS = 5  # interleaved rounds of a run's latency measurement


def measure_interleaved(files: dict[str, Path], profile: Profile, shape, runs: int | None,
                        slowest: str | None = None, rounds: int = ROUNDS) -> dict[str, LatencyStats]:
    """Latency of several ONNX files (label -> path), measured in ``rounds`` interleaved rounds: each
    round times every file in turn, so a machine that slows down or speeds up meanwhile shifts them
    all alike. ``runs`` (default: the profile's) timed runs per file are split across the rounds;
    every round warms up anew. The file labelled ``slowest`` gets its 10 slowest nodes profiled in
    the last round. One log line per file names it, with the spread of its rounds."""
    total = runs or profile.measure.runs
    rounds = max(1, min(rounds, total))
    per_round = math.ceil(total / rounds)
    runtime = choose_runtime(profile)
    runners = {label: make_runner(runtime, threads=profile.measure.threads, precision=profile.precision)
               for label in files}
    measured: dict[str, list[LatencyStats]] = {label: [] for label in files}
    with _runner_lines_hidden(), tempfile.TemporaryDirectory(prefix="compress-engines-") as folder:
        timed = _engines(files, profile, shape, Path(folder)) if runtime == "tensorrt" else files
        for i in range(rounds):  # a line per round would not say which model it timed: one per file below
            for label, path in timed.items():
                runner = runners[label]
                if label == slowest and i == rounds - 1:
                    runner = make_runner(runtime, threads=profile.measure.threads, precision=profile.precision,
                                         profile_nodes=10)
                measured[label].append(runner.measure(path, shape, batch=profile.batch,
                                                      warmup=profile.measure.warmup, runs=per_round))
    out = {label: LatencyStats.from_rounds(stats) for label, stats in measured.items()}
    for label, stats in out.items():
        log.info("latency of %s (%s, %s): p50 %.3f ms (rounds %.3f to %.3f ms), p90 %.3f ms, p99 %.3f ms, "
                 "%d rounds x %d runs", Path(files[label]).name, label, stats.runtime, stats.p50, min(stats.rounds),
                 max(stats.rounds), stats.p90, stats.p99, rounds, per_round)
    return out


def _engines(files: dict[str, Path], profile: Profile, shape, folder: Path) -> dict[str, Path]:
    """Each ONNX file built once into a TensorRT engine in ``folder``, the way TrtRunner builds one to
    time an ONNX file (an fp32 file at the profile's precision, a Q/DQ or fp16 file as it is), so
    every round times the same engine instead of building its own."""
    from exporters.tensorrt import build_engine, onnx_precision

    engines = {}
    for label, path in files.items():
        engines[label] = folder / f"{label}.engine"
        precision = profile.precision if onnx_precision(path) == "fp32" else None
        build_engine(path, engines[label], precision=precision, batch=profile.batch, input_shape=shape)
    return engines


@contextlib.contextmanager
def _runner_lines_hidden():
    """Hide the runners' own info lines for the duration."""
    logger = logging.getLogger("exporters.runners")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def latency_clock(profile: Profile) -> str:
    """How the latency table times layers on a target measured here: thread CPU time where that is
    exact (onnxruntime on one CPU thread, robust on a shared machine), else wall-clock time."""
    single = profile.measure.threads == 1 and choose_runtime(profile) == "onnxruntime-cpu"
    return "cpu" if single else "wall"

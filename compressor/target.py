"""The deployment target as this machine sees it: the profile, whether it can be measured here,
with which runtime, and the one function that measures an ONNX file on it."""
from __future__ import annotations

import logging
from pathlib import Path

from compress_base.errors import CompressError
from exporters.runners import available_runners, make_runner
from exporters.stats import LatencyStats
from profiles import Profile, host_model, load_profile

log = logging.getLogger(__name__)


def measuring_runtime(profile: Profile) -> str | None:
    """The first of the profile's runtimes usable on this machine, or None."""
    usable = available_runners()
    return next((r for r in profile.runtimes if r in usable), None)


def measurable_here(profile: Profile) -> bool:
    """Whether this machine is the profile's device and has one of its runtimes."""
    return profile.runs_here() and measuring_runtime(profile) is not None


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
    if measuring_runtime(profile) is None:
        raise CompressError(
            f"target {profile.name!r} measures with {', '.join(profile.runtimes)} and none of them is usable on "
            "this machine: run on the target device, or use --target cpu"
        )
    return profile


def measure_onnx(onnx_path: Path, profile: Profile, shape, runs: int | None, slowest: int = 0) -> LatencyStats:
    """Latency statistics of an ONNX file on the target (``slowest``: also profile that many nodes)."""
    runner = make_runner(measuring_runtime(profile), threads=profile.measure.threads, precision=profile.precision,
                         profile_nodes=slowest)
    stats = runner.measure(onnx_path, shape, batch=profile.batch, warmup=profile.measure.warmup,
                           runs=runs or profile.measure.runs)
    return stats


def latency_clock(profile: Profile) -> str:
    """How the latency table times layers: thread CPU time where that is exact (onnxruntime on one
    CPU thread, robust on a shared machine), else wall-clock time."""
    single = profile.measure.threads == 1 and measuring_runtime(profile) == "onnxruntime-cpu"
    return "cpu" if single else "wall"

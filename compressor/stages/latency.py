"""The stages of a latency budget: the calibrated latency model before the search, and the check
of the searched model's measured latency after it."""
from __future__ import annotations

import logging
from pathlib import Path

from compress_base.fileio import write_json
from exporters.onnx_export import export_onnx
from exporters.runtime_choice import choose_runtime

from .. import target
from ..distributed import broadcast_object, is_main
from ..run_report import LatencyCheck
from ..run_state import RunState
from ..surgery import materialize

log = logging.getLogger(__name__)

CORRECTIONS = 3  # measured/predicted rescalings before the latency check gives up


def needs_latency_model(state: RunState) -> bool:
    """A latency budget, or a table measured on a target this machine cannot measure."""
    return state.budget.latency_ms is not None or (state.config.latency_table is not None
                                                   and not target.measurable_here(state.profile))


def latency_model(state: RunState) -> None:
    """The calibrated latency model, from (and into) the latency table; on a target this machine
    cannot measure, the table is only read (it was measured on the device)."""
    from ..latency import build_latency_model

    config, profile, rt = state.config, state.profile, state.runtime
    table = Path(config.latency_table) if config.latency_table else default_table(profile.name)
    precision = config.precision or profile.precision  # layers are timed in the precision that ships
    if target.measurable_here(profile):
        lat = build_latency_model(state.space, state.model, profile, table, clock=target.latency_clock(profile),
                                  cache=config.latency_table is None, runtime=rt, precision=precision)
    else:
        lat = build_latency_model(state.space, state.model, profile, table, offline=True, precision=precision)
    state.latency_model = lat
    if is_main():
        write_json(state.out / "latency_model.json", lat.to_dict())
        state.artifacts.append("latency_model.json")
    if state.budget.latency_ms is not None:
        state.budget = state.budget.with_latency_model(lat)
        if not state.meets_budget:
            state.budget.check_reachable(state.space)


def default_table(profile_name: str) -> Path:
    """The automatic latency cache of a target."""
    return Path.home() / ".cache" / "compressor" / f"latency-{profile_name}.json"


def target_measure(state: RunState):
    """A function measuring an architecture's p50 latency on the target, in the precision that ships
    where onnxruntime times it (rank 0 measures, every rank receives the same figure)."""
    from ..latency.probes import prepare_for_timing
    from ..latency.table import graph_precision

    profile = state.profile
    precision = state.config.precision or profile.precision
    rewrite = precision != "fp32" and graph_precision(choose_runtime(profile))

    def measure(arch) -> float:
        value = None
        if is_main():
            small = materialize(state.space, state.model, arch)
            path = export_onnx(small, state.shape, state.state_dir / "measure.onnx")
            if rewrite:
                path = prepare_for_timing(path, state.state_dir / f"measure.{precision}.onnx", precision,
                                          profile.quantization, state.shape, profile.batch)
            value = target.measure_onnx(path, profile, state.shape, None).p50
        return broadcast_object(value)
    return measure


def needs_latency_check(state: RunState) -> bool:
    return state.budget.latency_ms is not None and target.measurable_here(state.profile)


def latency_check(state: RunState) -> None:
    """Rank 0 measures the searched model on the target; while it is over the latency budget, the
    prediction is scaled by measured/predicted and the architecture repaired. Every rank takes
    rank 0's architecture."""
    from ..architecture import Architecture

    if is_main():
        _meet_measured_latency(state)
    shared = Architecture.from_dict(broadcast_object(state.architecture.to_dict()))
    if shared != state.architecture:
        state.architecture, state.small = shared, materialize(state.space, state.model, shared)


def _meet_measured_latency(state: RunState) -> None:
    from ..search import repair

    checks = []
    for _ in range(CORRECTIONS):
        budget = state.budget
        predicted = budget.latency.predict(state.architecture)
        path = export_onnx(state.small, state.shape, state.state_dir / "latency-check.onnx")
        measured = target.measure_onnx(path, state.profile, state.shape, None).p50
        macs = state.space.macs(state.architecture)
        checks.append(LatencyCheck(predicted_ms=predicted, measured_ms=measured, macs=macs))
        log.info("latency check: predicted %.3f ms, measured %.3f ms (budget %.3f ms)", predicted, measured,
                 budget.latency_ms)
        if measured <= budget.latency_ms:
            break
        state.budget = budget.with_latency_model(budget.latency.rescaled(measured / predicted))
        state.architecture = repair(state.space, state.budget, state.architecture).architecture
        state.small = materialize(state.space, state.model, state.architecture)
    else:
        log.warning("measured latency %.3f ms is still over the %.3f ms budget after %d corrections",
                    checks[-1].measured_ms, state.budget.latency_ms, CORRECTIONS)
    state.latency_check = checks

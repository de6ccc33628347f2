"""The stages that deliver: save and export the compressed model, measure it on the target, and
write the report and the manifest (shared by ``compress run`` and ``compress nas``)."""
from __future__ import annotations

import dataclasses
import logging

from exporters.onnx_export import export_onnx, verify_onnx

from .. import artifact, target
from ..manifest import write_manifest
from ..report import write_reports
from ..run_report import Latency, OnnxInfo
from ..run_state import RunState
from ..rundir import RunDir, remove_previous_artifacts

log = logging.getLogger(__name__)

REPORTS = ("report.json", "report.md", "report.html")


def export(state: RunState) -> None:
    """``arch.json`` + ``model.pt``, ``model.onnx`` checked against PyTorch, and ``baseline.onnx``."""
    out = state.out
    remove_previous_artifacts(out)  # --overwrite into a finished run: none of its files is taken for ours
    artifact.save(state.small, state.architecture, state.spec, out)
    onnx_path = export_onnx(state.small, state.shape, out / "model.onnx")
    parity = verify_onnx(state.small, onnx_path, state.shape)
    state.onnx = OnnxInfo(path=onnx_path.name, opset=parity["opset"], max_abs_diff=parity["max_abs_diff"],
                          checker=parity["checker"])
    state.artifacts += [artifact.ARCH_FILE, artifact.WEIGHTS_FILE, onnx_path.name]
    if state.baseline_accuracy is not None:  # a compressed run: the original too, to compare on the device
        export_onnx(state.model, state.shape, out / "baseline.onnx")
        state.artifacts.append("baseline.onnx")


def can_measure(state: RunState) -> bool:
    if target.measurable_here(state.profile):
        return True
    state.notes.append(f"latency was not measured: this machine is not the {state.profile.name} target; measure "
                       f"model.onnx and baseline.onnx there with `compress bench FILE --target {state.profile.name}` "
                       "and merge the results with `compress report`")
    return False


def measure(state: RunState) -> None:
    """Latency of the compressed model (with its slowest nodes) and of the original, on the target."""
    runs = state.config.latency_runs
    compressed = target.measure_onnx(state.out / "model.onnx", state.profile, state.shape, runs, slowest=10)
    baseline = target.measure_onnx(state.out / "baseline.onnx", state.profile, state.shape, runs) \
        if "baseline.onnx" in state.artifacts else None
    state.latency = Latency(compressed=compressed, baseline=baseline)


def finish(state: RunState, command: str) -> None:
    """Write the reports and the manifest of what this run wrote, then drop the resume state (after the
    manifest: a run killed in between is finished, not lost)."""
    write_reports(state.out, state.report)
    report = state.report
    write_manifest(state.out, {"command": command, **report.settings, "budget": report.budget,
                               "data": dataclasses.asdict(report.data)}, files=[*state.artifacts, *REPORTS])
    RunDir(state.out).finish()
    log.info("wrote %s", state.out)

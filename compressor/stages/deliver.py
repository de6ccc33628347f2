"""The stages that deliver: save and export the compressed model, measure it on the target, and
write the report and the manifest (shared by ``compress run`` and ``compress nas``)."""
from __future__ import annotations

import dataclasses
import logging

from compress_base.fileio import write_torch
from exporters.onnx_eval import add_metadata, onnx_correct
from exporters.onnx_export import export_onnx, verify_onnx

from .. import artifact, target
from ..manifest import write_manifest
from ..report import write_reports
from ..run_report import ExportedAccuracy, Latency, OnnxInfo
from ..run_state import RunState
from ..rundir import RunDir, remove_previous_artifacts
from .prepare import TEACHER_FILE

log = logging.getLogger(__name__)

REPORTS = ("report.json", "report.md", "report.html")


def export(state: RunState) -> None:
    """``arch.json`` + ``model.pt``, ``model.onnx`` checked against PyTorch, ``baseline.onnx``, and the
    teacher this run trained (``teacher.pt``, weights only). The ONNX files carry the preprocessing and
    class names a deployer needs (metadata)."""
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
    if state.teacher_trained:
        write_torch(out / TEACHER_FILE, state.model.state_dict())
        state.artifacts.append(TEACHER_FILE)
    metadata = deployment_metadata(state)
    for name in ("model.onnx", "baseline.onnx"):
        if name in state.artifacts:
            add_metadata(out / name, metadata)


def deployment_metadata(state: RunState, precision: str = "fp32") -> dict:
    """What a deployer must feed the model: input shape, class names, preprocessing, and the
    precision of the file's weights and arithmetic (``model.onnx`` and ``baseline.onnx``: fp32)."""
    data = state.eval_data or state.data
    preprocess = getattr(data, "preprocess", None)
    return {"input_shape": list(state.shape), "class_names": list(data.class_names),
            "preprocess": preprocess.to_dict(state.shape[1]) if preprocess is not None else data.source,
            "precision": precision}


def at_deployment(state: RunState) -> bool:
    return state.resolutions is not None and state.resolutions.at_deployment


def evaluate_export(state: RunState) -> None:
    """The shipped files' accuracy on the validation images at the deployment shape, through
    onnxruntime; it becomes the report's accuracy. PyTorch's (the same images) is kept beside it,
    and a disagreement is a note."""
    def batches():  # streamed, one pass per file: a validation set need not fit in memory
        return ((x.numpy(), y.numpy()) for x, y in state.val_loader)

    correct, images = onnx_correct(state.out / "model.onnx", batches())
    base = onnx_correct(state.out / "baseline.onnx", batches())[0] if "baseline.onnx" in state.artifacts else None
    state.exported_accuracy = ExportedAccuracy(
        images=images, compressed_onnx=correct / images, compressed_pytorch=state.accuracy,
        baseline_onnx=None if base is None else base / images, baseline_pytorch=state.baseline_accuracy)
    for side, onnx_acc, torch_acc in (("compressed", correct / images, state.accuracy),
                                      ("baseline", None if base is None else base / images, state.baseline_accuracy)):
        if onnx_acc is not None and abs(onnx_acc - torch_acc) * images > max(1, 0.001 * images):
            state.notes.append(f"the exported {side} model scores {100 * onnx_acc:.2f}% through onnxruntime and "
                               f"{100 * torch_acc:.2f}% in PyTorch on the same {images} images: check the export")
            log.warning(state.notes[-1])
    state.accuracy = correct / images
    if base is not None:
        state.baseline_accuracy = base / images


def can_measure(state: RunState) -> bool:
    if target.measurable_here(state.profile):
        return True
    state.notes.append(f"latency was not measured: this machine is not the {state.profile.name} target; measure "
                       f"model.onnx and baseline.onnx there with `compress bench FILE --target {state.profile.name}` "
                       "and merge the results with `compress report`")
    return False


def measure(state: RunState) -> None:
    """Latency on the target of the compressed model (with its slowest nodes), the original and the
    low-precision model, in interleaved rounds (:func:`compressor.target.measure_interleaved`)."""
    files = {"compressed": state.out / "model.onnx"}
    if "baseline.onnx" in state.artifacts:
        files["baseline"] = state.out / "baseline.onnx"
    if state.precision is not None and state.precision.file:
        files["precision"] = state.out / state.precision.file
    stats = target.measure_interleaved(files, state.profile, state.shape, state.config.latency_runs,
                                       slowest="compressed")
    state.latency = Latency(**stats)


def finish(state: RunState, command: str) -> None:
    """Write the reports and the manifest of what this run wrote, then drop the resume state (after the
    manifest: a run killed in between is finished, not lost)."""
    write_reports(state.out, state.report, history=state.history)
    report = state.report
    write_manifest(state.out, {"command": command, **report.settings, "budget": report.budget,
                               "data": dataclasses.asdict(report.data)}, files=[*state.artifacts, *REPORTS])
    RunDir(state.out).finish()
    log.info("wrote %s", state.out)

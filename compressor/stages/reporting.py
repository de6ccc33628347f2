"""The report stage of ``compress run``: every figure describes the delivered model."""
from __future__ import annotations

from compress_base.fileio import write_json

from ..artifact import ARCH_FILE
from ..report_content import reproduce_of
from ..run_report import (
    ArchitectureInfo,
    Costs,
    DataInfo,
    FixedLayers,
    PredictedLatency,
    Resolution,
    RunReport,
    SearchInfo,
    Target,
)
from ..run_state import RunState
from .deliver import deployment_metadata, finish


def report(state: RunState) -> None:
    """Write ``search.json``, the reports and the manifest."""
    config, space, arch, full, lat = state.config, state.space, state.architecture, state.full, state.latency_model
    write_json(state.out / "search.json", {"method": config.method, "history": state.history})
    preprocess = deployment_metadata(state)["preprocess"]
    preprocess = preprocess if isinstance(preprocess, dict) else None  # None: the digits demo's own scaling
    state.artifacts.append("search.json")
    state.report = RunReport(
        model=config.model, weights=config.weights, out=str(state.out), target=Target.of(state.profile),
        method=config.method, input_shape=list(state.shape), train_resolution=config.train_resolution,
        resolution=Resolution(**state.resolutions.to_dict()), preprocess=preprocess,
        data=DataInfo.of(state.data), budget=state.budget.to_dict(),
        baseline=Costs(macs=space.macs(full), params=space.params(full), accuracy=state.baseline_accuracy),
        compressed=Costs(macs=space.macs(arch), params=space.params(arch), accuracy=state.accuracy),
        exported_accuracy=state.exported_accuracy, precision=state.precision,
        predicted_latency_ms=PredictedLatency(lat.predict(full), lat.predict(arch)) if lat is not None else None,
        latency=state.latency, onnx=state.onnx,
        architecture=ArchitectureInfo.of_widths(ARCH_FILE, _model_order(space, arch.widths), full.widths,
                                                arch.blocks),
        fixed_layers=[FixedLayers(**e) for e in space.fixed_layers],
        search=SearchInfo(steps=len(state.history), file="search.json"), latency_check=state.latency_check,
        training=dict(state.training) or None, reproduce=reproduce_of(), settings=config.settings(),
        notes=state.notes, timings_s=dict(state.timings),
    )
    finish(state, "run")


def _model_order(space, widths: dict) -> dict:
    """``widths`` with its groups in the order their first layer runs in the model."""
    position = {g.name: g.position for g in space.groups}
    return dict(sorted(widths.items(), key=lambda kv: position.get(kv[0], len(position))))

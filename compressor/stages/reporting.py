"""The report stage of ``compress run``: every figure describes the delivered model."""
from __future__ import annotations

from .. import checkpoint
from ..fileio import write_json
from ..run_state import RunState
from .deliver import costs, finish, percentiles


def report(state: RunState) -> None:
    """Write ``search.json``, the reports and the manifest."""
    config, data, space, arch, lat = state.config, state.data, state.space, state.architecture, state.latency
    write_json(state.out / "search.json", {"method": config.method, "history": state.history})
    state.artifacts.append("search.json")
    state.report = {
        "model": config.model,
        "weights": config.weights,
        "out": str(state.out),
        "target": state.profile.to_dict(),
        "method": config.method,
        "input_shape": list(state.shape),
        "train_resolution": config.train_resolution,
        "data": {"source": data.source, "train": len(data.train), "val": len(data.val),
                 "num_classes": data.num_classes},
        "budget": state.budget.to_dict(),
        "baseline": {**costs(space, state.full), "accuracy": state.baseline_accuracy,
                     "latency_ms": percentiles(lat.get("baseline"))},
        "compressed": {**costs(space, arch), "accuracy": state.accuracy,
                       "latency_ms": percentiles(lat.get("compressed"))},
        "predicted_latency_ms": {"baseline": state.latency_model.predict(state.full),
                                 "compressed": state.latency_model.predict(arch)}
        if state.latency_model is not None else None,
        "latency": lat,
        "onnx": state.onnx,
        "architecture": {"file": checkpoint.ARCH_FILE, "widths": arch.widths, "full_widths": state.full.widths,
                         "blocks": arch.blocks, "dropped_blocks": [k for k, v in arch.blocks.items() if not v]},
        "fixed_layers": space.fixed_layers,
        "search": {"steps": len(state.history), "file": "search.json"},
        "latency_check": state.latency_check,
        "settings": config.settings(),
        "notes": state.notes,
        "timings_s": dict(state.timings),
    }
    finish(state, "run")

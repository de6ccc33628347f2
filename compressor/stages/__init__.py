"""The stages of a run, and the two stage lists: ``compress run`` and ``compress nas``.

Each stage is one function of the :class:`~compressor.run_state.RunState`; adding a stage is one
function and one line in a list (see docs/ARCHITECTURE.md).
"""
from __future__ import annotations

from ..executor import Stage
from . import deliver, latency, nas, precision, prepare, reporting, search

RUN_STAGES = [
    Stage("data", prepare.data),
    Stage("model", prepare.model),
    Stage("search_space", prepare.search_space),
    Stage("teacher_training", prepare.teacher_training, when=prepare.needs_teacher),
    Stage("latency_model", latency.latency_model, when=latency.needs_latency_model),
    Stage("evaluate_baseline", prepare.evaluate_baseline),
    Stage("search", search.search),
    Stage("materialize", search.materialize),
    Stage("latency_check", latency.latency_check, when=latency.needs_latency_check),
    Stage("fine_tuning", search.fine_tuning),
    Stage("export", deliver.export, main_only=True),
    Stage("evaluate_export", deliver.evaluate_export, when=deliver.at_deployment, main_only=True),
    Stage("precision", precision.precision, main_only=True),
    Stage("latency", deliver.measure, when=deliver.can_measure, main_only=True),
    Stage("report", reporting.report, main_only=True),
]

NAS_STAGES = [
    Stage("data", nas.data),
    Stage("search", nas.search),
    Stage("evaluate", nas.evaluate_network, main_only=True),
    Stage("export", deliver.export, main_only=True),
    Stage("latency", deliver.measure, main_only=True),
    Stage("report", nas.report, main_only=True),
]

__all__ = ["NAS_STAGES", "RUN_STAGES", "Stage"]

"""What the stages of a run share: the typed state each stage reads and fills in.

A stage is a function ``stage(state) -> None`` (see ``compressor.stages``); the executor
(``compressor.executor``) runs a list of them over one :class:`RunState`. Fields start empty and
are filled by the stage named beside them; a stage may read only what earlier stages filled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profiles import Profile

from .architecture import Architecture
from .budget import Budget
from .run_report import ExportedAccuracy, Latency, OnnxInfo, PrecisionResult, RunReport
from .rundir import STATE_DIR
from .runtime import Runtime
from .settings import RunConfig


@dataclass
class RunState:
    """One run's configuration, its run directory, and what its stages have produced so far."""

    config: RunConfig
    out: Path
    profile: Profile
    shape: tuple[int, int, int]
    runtime: Runtime
    budget: Budget
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    resolutions: Any = None  # data: the deployment, search and evaluation sizes (compressor.resolution)
    data: Any = None  # data: the DataBundle at the search resolution (the searchers' proxy)
    eval_data: Any = None  # data: the DataBundle at the evaluation resolution (the same object if equal)
    train_loader: Any = None  # data: evaluation-resolution training images (teacher, fine-tuning)
    fresh_train_loader: Any = None  # data: makes the training loader anew (fine-tuning's shuffling is its own)
    val_loader: Any = None  # data: evaluation-resolution validation images
    model: Any = None  # model: the original (the teacher)
    spec: Any = None  # model: how to rebuild it (ModelSpec)
    trained: bool = False  # model: whether it came with trained weights
    teacher_trained: bool = False  # teacher_training: the original was trained here (kept as teacher.pt)
    space: Any = None  # search_space: the SearchSpace
    full: Architecture | None = None  # search_space: the unshrunk architecture
    meets_budget: bool = False  # search_space: the original meets the budget, it is kept as is
    latency_model: Any = None  # latency_model: the calibrated latency predictor, if any
    baseline_accuracy: float | None = None  # evaluate_baseline
    architecture: Architecture | None = None  # search, repaired by latency_check
    history: list = field(default_factory=list)  # search: the searcher's trace
    small: Any = None  # materialize: the compressed nn.Module, trained by fine_tuning
    latency_check: list | None = None  # latency_check: LatencyChecks, one per correction
    training: dict = field(default_factory=dict)  # teacher_training, fine_tuning: per-epoch records by name
    accuracy: float | None = None  # fine_tuning (or evaluate for a nas run): the compressed model's
    onnx: OnnxInfo | None = None  # export: path, opset, parity
    exported_accuracy: ExportedAccuracy | None = None  # evaluate_export: the shipped files' accuracy
    precision: PrecisionResult | None = None  # precision: the shipped precision's file and accuracy
    latency: Latency = field(default_factory=Latency)  # latency: measured on the target
    artifacts: list[str] = field(default_factory=list)  # the files of the run directory this run wrote
    report: RunReport | None = None  # report

    @property
    def state_dir(self) -> Path:
        """Where stages keep what --resume needs."""
        return self.out / STATE_DIR

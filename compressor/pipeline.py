"""One compression run, end to end: model → space → search → materialize → fine-tune → export → measure.

:func:`run` and :func:`run_nas` are the public entry points: each checks what can be checked
before anything is written, then hands its stage list (``compressor.stages``) to the executor
(``compressor.executor``), which writes the run directory (``arch.json``, ``model.pt``,
``model.onnx``, ``baseline.onnx``, reports, ``manifest.json``).
"""
from __future__ import annotations

from pathlib import Path

from compress_base.errors import CompressError

from .executor import execute
from .models import native_input_shape
from .run_report import RunReport
from .run_state import RunState
from .runtime import seed_everything
from .search import check_options
from .settings import NAS_METHOD, RunConfig, resume_config, run_runtime
from .stages import NAS_STAGES, RUN_STAGES
from .target import latency_clock, resolve_target
from .units import parse_shape

__all__ = ["NAS_METHOD", "RunConfig", "latency_clock", "resolve_target", "resume_config", "run",
           "run_nas", "seed_everything"]


def run(config: RunConfig) -> RunReport | None:
    """Run one compression end to end and return the report (also written to the run directory;
    None on a torchrun rank other than 0)."""
    check_options(config.method, config.options or {})
    # MACs and params need no device; a latency budget needs the target, or a table measured on it
    profile = resolve_target(config.target, offline_ok=config.latency_table is not None
                             or config.budget.latency_ms is None)
    return execute(config, RUN_STAGES, _initial_state(profile), config.model)


def run_nas(config: RunConfig) -> RunReport | None:
    """Search a ShrinkCNN cell from scratch (AutoShrink), deploy it at the MAC budget, train, export, measure.

    Under torchrun the ranks split each step's candidates and train the deployed network with DDP;
    rank 0 alone exports, measures and writes (the other ranks return None).
    """
    if config.budget.macs is None:
        raise CompressError("compress nas needs --budget-macs: the found cell is stacked to fit it")
    return execute(config, NAS_STAGES, _initial_state(resolve_target(config.target)), "shrinkcnn")


def _initial_state(profile):
    """The executor's ``make_state``: the state before the first stage, its generators seeded."""
    def make(config: RunConfig, out: Path) -> RunState:
        seed_everything(config.seed)
        shape = parse_shape(config.input_shape) if config.input_shape else \
            native_input_shape(config.model) or profile.input_shape
        runtime = run_runtime(config)
        return RunState(config=config, out=out, profile=profile, shape=shape, runtime=runtime, budget=config.budget)
    return make

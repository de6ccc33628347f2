"""The stages of ``compress nas``: a ShrinkCNN cell searched from scratch, deployed at the MAC budget.

The run shares the executor, the export, measure and finish stages with ``compress run``; only
its data, search and report stages are its own.
"""
from __future__ import annotations

from compress_base.fileio import write_json

from ..artifact import ARCH_FILE
from ..data import load_data, make_loader
from ..report_content import reproduce_of
from ..run_report import ArchitectureInfo, Costs, DataInfo, RunReport, SearchInfo, Target
from ..run_state import RunState
from ..settings import NAS_METHOD
from ..space import SearchSpace
from ..train import evaluate
from .deliver import finish
from .reporting import cli_command

TRAINING = "deployed network"  # the name of the found network's training in the report


def data(state: RunState) -> None:
    """Load the images (the cell search makes its own loaders)."""
    config, rt = state.config, state.runtime
    state.data = load_data(config.data, resolution=config.train_resolution, seed=rt.seed)
    state.notes.extend(state.data.warnings)


def search(state: RunState) -> None:
    """Search the cell (the ranks split each step's candidates) and train the deployed network (its
    per-epoch records go to the report's training curves)."""
    from ..nas.shrinkcnn import search_and_train_network

    config, rt = state.config, state.runtime
    state.small, state.spec, state.history, records = search_and_train_network(
        state.data, config.budget.macs, state.shape, options=config.options, epochs=config.epochs,
        batch_size=config.batch_size, lr=config.lr, runtime=rt, state_dir=state.state_dir)
    if records:
        state.training[TRAINING] = records


def evaluate_network(state: RunState) -> None:
    """The deployed network's validation accuracy; its space, to export it like any compressed model."""
    config, rt = state.config, state.runtime
    val_loader = make_loader(state.data.val, config.batch_size, shuffle=False, seed=rt.seed)
    state.accuracy = evaluate(state.small, val_loader, rt)
    state.small = state.small.cpu().eval()
    state.space = SearchSpace.build(state.small, state.shape, state.spec.name,
                                    channel_multiple=state.profile.channel_multiple)
    state.architecture = state.space.full()


def report(state: RunState) -> None:
    """Write ``search.json`` (the snapshots), the reports (with the training curves and the ``compress nas``
    command that reproduces the run) and the manifest."""
    config, space, arch, spec = state.config, state.space, state.architecture, state.spec
    write_json(state.out / "search.json", {"method": "shrinkcnn", "snapshots": [s.to_dict() for s in state.history]})
    state.artifacts.append("search.json")
    state.report = RunReport(
        model="shrinkcnn", out=str(state.out), target=Target.of(state.profile), method=NAS_METHOD,
        input_shape=list(state.shape), train_resolution=config.train_resolution, data=DataInfo.of(state.data),
        budget=config.budget.to_dict(),
        compressed=Costs(macs=space.macs(arch), params=space.params(arch), accuracy=state.accuracy),
        latency=state.latency, onnx=state.onnx, spec=spec.to_dict(),
        architecture=ArchitectureInfo(file=ARCH_FILE, cell_edges=spec.kwargs.get("edges")),
        search=SearchInfo(steps=len(state.history), file="search.json"), training=dict(state.training) or None,
        reproduce=reproduce_of(cli_command(config, config.budget.to_dict(), "nas")), settings=config.settings(),
        notes=state.notes, timings_s=dict(state.timings),
    )
    finish(state, "nas")

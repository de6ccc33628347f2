"""The report stage of ``compress run``: every figure describes the delivered model."""
from __future__ import annotations

import dataclasses
import json
import shlex

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
from ..settings import RunConfig
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
        training=dict(state.training) or None, reproduce=reproduce_of(_reproducing(state)),
        settings=config.settings(),
        notes=state.notes, timings_s=dict(state.timings),
    )
    finish(state, "run")


def _reproducing(state: RunState) -> str:
    """What runs this again: the ``compressor.compress`` call for a run made with a model or loaders
    in memory, else the ``compress run`` command."""
    budget = state.budget.to_dict()
    if state.config.in_memory:
        return python_call(state.config, budget, state.trained)
    return cli_command(state.config, budget)


def _model_order(space, widths: dict) -> dict:
    """``widths`` with its groups in the order their first layer runs in the model."""
    position = {g.name: g.position for g in space.groups}
    return dict(sorted(widths.items(), key=lambda kv: position.get(kv[0], len(position))))


# settings a reproduction leaves out: where it writes, resuming, verbosity, trust; and the option names that
# are not the setting's name with dashes
_NOT_REPRODUCED = {"budget", "out", "overwrite", "resume", "quiet", "trust_code", "search_cwd", "in_memory"}
_OPTION = {"temperature": "--kd-temperature"}
# the settings `compress nas` has options for (its model and method are its own)
NAS_SETTINGS = frozenset({"data", "target", "input_shape", "train_resolution", "epochs", "batch_size", "lr", "options",
                          "seed", "device", "latency_runs"})
_BUDGET_OPTIONS = (("macs", "--budget-macs"), ("params", "--budget-params"), ("latency_ms", "--budget-latency"))


def cli_command(config: RunConfig, budget: dict, command: str = "run") -> str:
    """The ``compress run`` (or, with ``command="nas"``, ``compress nas``) command with this run's
    settings: its (resolved) budget and every setting that command takes that differs from its default."""
    args = ["compress", command]
    for key, option in _BUDGET_OPTIONS[:1] if command == "nas" else _BUDGET_OPTIONS:
        if budget.get(key) is not None:
            args += [option, f"{budget[key]:g}" if key == "latency_ms" else str(int(budget[key]))]
    for name, value in _changed(config):
        if command == "nas" and name not in NAS_SETTINGS:
            continue
        option = _OPTION.get(name, "--" + name.replace("_", "-"))
        if name == "amp":
            args.append("--no-amp")
        elif isinstance(value, bool):
            args.append(option)
        elif name == "options":
            args += [a for k, v in value.items() for a in ("--option", f"{k}={_option_value(v)}")]
        elif isinstance(value, list):
            args += [a for v in value for a in (option, str(v))]
        else:
            args += [option, str(value)]
    return shlex.join(args)


def python_call(config: RunConfig, budget: dict, trained: bool = True) -> str:
    """The ``compressor.compress(...)`` call with this run's settings (its budget resolved, the settings
    that differ from their defaults). What the run held in memory (``config.in_memory``) appears as
    the names ``model``, ``train_loader`` and ``val_loader``, which a comment says are the caller's."""
    held = config.in_memory or []
    args = ["model" if "model" in held else repr(config.model)]
    if "data" in held:
        args += ["train_loader=train_loader", "val_loader=val_loader"]
    args += [f"{key}={budget[key]!r}" for key, _ in _BUDGET_OPTIONS if budget.get(key) is not None]
    args += [f"{name}={value!r}" for name, value in _changed(config) if name != "model"]
    if "model" in held and not trained:
        args.append("trained=False")
    yours = ([f"model is your {config.model} (as given, before compression)"] if "model" in held else []) + \
        (["train_loader and val_loader are your DataLoaders"] if "data" in held else [])
    return f"compressor.compress({', '.join(args)})  # {'; '.join(yours)}"


def _changed(config: RunConfig):
    """(name, value) of the settings a reproduction gives: those not at their default."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.name not in _NOT_REPRODUCED and value != default:
            yield f.name, value


def _option_value(value) -> str:
    """An ``--option`` value as the CLI reads it back (JSON where it parses, else the text itself)."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
    return json.dumps(value)

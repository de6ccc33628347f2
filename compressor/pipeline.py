"""One compression run, end to end: model → space → search → materialize → fine-tune → export → measure.

Each stage is a function of plain inputs; :func:`run` strings them together, times them, and
writes the run directory (``arch.json``, ``model.pt``, ``model.onnx``, ``baseline.onnx``,
``report.json``, ``report.md``).
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from exporters.onnx_export import export_onnx, verify_onnx
from exporters.runners import available_runners, make_runner
from profiles import Profile, host_model, load_profile

from . import checkpoint
from .architecture import Architecture
from .budget import Budget
from .counting import count_macs, count_params
from .data import load_data, make_loader
from .distributed import all_gather_object, broadcast_object, is_main, process_group
from .errors import CompressError, first_line
from .fileio import write_json, write_torch
from .manifest import write_manifest
from .models import resolve_model
from .report import write_reports
from .resume import restoring
from .rundir import STATE_DIR, RunDir, open_new, open_resume, remove_previous_artifacts
from .settings import (NAS_METHOD, NAS_MODEL, PATH_FIELDS, RunConfig, absolute_paths, config_from_settings,
                       paths_outside)
from .search import SEARCHERS, SearchContext, check_options
from .space import SearchSpace
from .surgery import materialize
from .train import evaluate, pick_device, reinitialize, train
from .units import format_count, parse_shape

log = logging.getLogger(__name__)

ONNX_OPSET = 17


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so the same seed gives the same run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def measurable_here(profile: Profile) -> bool:
    """Whether this machine is the profile's device and has one of its runtimes."""
    return profile.runs_here() and measuring_runtime(profile) is not None


def resolve_target(name: str, offline_ok: bool = False) -> Profile:
    """Load the target profile and check that this machine can measure on it.

    With ``offline_ok`` (a latency table measured on the device was given), a target this machine
    cannot measure is accepted: the search uses the table, and the result is measured on the
    device afterwards (``compress bench``, merged with ``compress report``).
    """
    profile = load_profile(name)
    if offline_ok and not measurable_here(profile):
        log.warning("this machine cannot measure on target %s: searching with the latency table; measure the "
                    "result on the device with `compress bench model.onnx --target %s`", profile.name, profile.name)
        return profile
    if not profile.runs_here():
        raise CompressError(
            f"target {profile.name!r} is a {profile.host_model} board and this machine is {host_model()!r}: "
            f"run on the board, or measure there with `compress bench` and compare with `compress report`"
        )
    if measuring_runtime(profile) is None:
        raise CompressError(
            f"target {profile.name!r} measures with {', '.join(profile.runtimes)} and none of them is usable on "
            "this machine: run on the target device, or use --target cpu"
        )
    return profile


class _Stages:
    """Times named stages into a dict of seconds."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        log.info("stage: %s", name)
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self.seconds[name] = round(self.seconds.get(name, 0.0) + spent, 3)


def measuring_runtime(profile: Profile) -> str | None:
    """The first of the profile's runtimes usable on this machine, or None."""
    usable = available_runners()
    return next((r for r in profile.runtimes if r in usable), None)


def _measure(onnx_path: Path, profile: Profile, shape, runs: int | None, slowest: int = 0) -> dict:
    runtime = measuring_runtime(profile)
    runner = make_runner(runtime, threads=profile.measure.threads, precision=profile.precision,
                         profile_nodes=slowest)
    stats = runner.measure(onnx_path, shape, batch=profile.batch, warmup=profile.measure.warmup,
                           runs=runs or profile.measure.runs)
    return stats.to_dict()


def run(config: RunConfig) -> dict:
    """Run one compression end to end and return the report (also written to the run directory)."""
    check_options(config.method, config.options or {})
    profile = resolve_target(config.target, offline_ok=config.latency_table is not None)
    shape = parse_shape(config.input_shape) if config.input_shape else profile.input_shape
    return _in_run_dir(config, config.model, lambda out: _run(config, profile, shape, out))


def _in_run_dir(config: RunConfig, name: str, stages) -> dict:
    """Run ``stages(out)`` in the run directory, locked by rank 0: a new one (its settings saved for
    --resume), or the killed run's with ``config.resume``. A new run that fails on bad input before
    any stage saved state removes what it created; an interrupted or crashed run keeps what
    --resume needs. Under torchrun the process group lives for the whole run."""
    with process_group():
        run_dir = _shared_run_dir(config, name)
        try:
            return stages(run_dir.path)
        except CompressError:
            if is_main() and not config.resume and not run_dir.did_work():
                run_dir.discard()
            raise
        except OSError as exc:
            raise _write_error(exc, run_dir.path) from None
        finally:
            run_dir.release()


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _write_error(exc: OSError, out: Path) -> Exception:
    """A full disk or read-only folder under the run: one line saying how to continue; other OS
    errors stay what they are."""
    inside = exc.filename is not None and Path(exc.filename).absolute().is_relative_to(out.absolute())
    if exc.errno in _WRITE_ERRNOS or (inside and exc.errno in (errno.EACCES, errno.EPERM)):
        return CompressError(f"cannot write to the run directory {out} ({exc.strerror}): free space or make it "
                             f"writable, then continue with `compress --resume {out}`")
    return exc


def _shared_run_dir(config: RunConfig, name: str) -> RunDir:
    """Rank 0 opens (and locks) the run directory and saves the settings; every rank learns its
    path (or rank 0's error)."""
    result: tuple = (None, None)
    run_dir = None
    if is_main():
        try:
            run_dir = open_resume(config.out) if config.resume else _open_new(config, name)
            result = (str(run_dir.path), None)
        except CompressError as exc:
            result = (None, str(exc))
    path, error = broadcast_object(result)
    if error:
        raise CompressError(error)
    return run_dir or RunDir(Path(path))


def _open_new(config: RunConfig, name: str) -> RunDir:
    run_dir = open_new(config.out, name, config.overwrite)
    config.out = str(run_dir.path)
    absolute_paths(config)
    try:
        write_json(run_dir.settings_file, {**config.settings(), "budget": config.budget.to_dict()})
    except BaseException:
        run_dir.discard()
        run_dir.release()
        raise
    return run_dir


def resume_config(run_dir: str, quiet: bool = False, trust_code: bool = False, given: dict | None = None) -> RunConfig:
    """The settings of the killed run in ``run_dir``, to continue it with :func:`run` (:func:`run_nas` for
    a ``compress nas`` run).

    ``run.json`` is data: a user-code model spec in it is imported only with ``trust_code``, and the
    paths it names outside the run directory only when ``given`` again (``{"data": path, ...}``, the
    options typed on the command line). ``quiet`` is this invocation's, for logs and bars alike.
    """
    from .rundir import read_settings

    path = Path(run_dir)
    source = f"{path / STATE_DIR / 'run.json'}"
    config = config_from_settings(read_settings(path), source)
    given = dict(given or {})
    for name, value in given.items():
        setattr(config, name, value)
    absolute_paths(config)
    outside = [n for n in paths_outside(config, path) if n not in given]
    if outside:
        name = outside[0]
        raise CompressError(
            f"{source} names {name} {getattr(config, name)!r} outside the run directory, and paths from a run "
            f"directory are trusted only inside it: confirm it with `compress --resume {run_dir} "
            f"{PATH_FIELDS[name]} {getattr(config, name)}`"
        )
    if config.method == NAS_METHOD and config.model != NAS_MODEL:
        raise CompressError(f"{source} is damaged: a compress nas run builds {NAS_MODEL}, not {config.model!r}; "
                            "start a new run")
    if config.method != NAS_METHOD and ":" in config.model and not trust_code:
        raise CompressError(
            f"{source} names the user-code model {config.model!r}; resuming would import and run it: pass "
            "--trust-code (Python: trust_code=True) if you trust this run directory, or start a new run"
        )
    config.out, config.resume, config.quiet, config.trust_code = str(path), True, quiet, trust_code
    return config


def _run(config: RunConfig, profile: Profile, shape, out: Path) -> dict:
    stage = _Stages()
    seed_everything(config.seed)
    device = pick_device(config.device)

    with stage("data"):
        data = load_data(config.data, resolution=config.train_resolution, seed=config.seed, quiet=config.quiet)
        if shape[0] != 3:
            raise CompressError(f"input shape {'x'.join(map(str, shape))} has {shape[0]} channels; "
                                "the images have 3: use 3xHxW")
        train_loader = make_loader(data.train, config.batch_size, shuffle=True, seed=config.seed, shard=True)
        val_loader = make_loader(data.val, config.batch_size, shuffle=False, seed=config.seed)

    with stage("model"):
        num_classes = config.num_classes or data.num_classes
        if num_classes != data.num_classes:
            raise CompressError(f"--num-classes {num_classes} does not match the data's {data.num_classes} "
                                "classes: drop --num-classes or use matching data")
        # the spec was typed by the caller, or confirmed with --trust-code on --resume (resume_config)
        model, spec, trained = resolve_model(config.model, config.weights, num_classes, trust_code=True)
        _check_runs_at(model, config.train_resolution)

    with stage("search_space"):
        space = SearchSpace.build(model, shape, config.model, channel_multiple=profile.channel_multiple)
        full = space.full()
        budget = config.budget
        notes = []
        if (budget.macs, budget.params) != (None, None) and replace(budget, latency_ms=None).fits(space, full) \
                and budget.latency_ms is None:
            notes.append("the model already meets the budget; it is kept as is")
            log.warning(notes[-1])
        elif not space.decisions():
            why = "; ".join(e["reason"] for e in space.fixed_layers) or "it has no prunable channel groups or blocks"
            raise CompressError(f"{config.model} has nothing the search can shrink ({why[:300]}); "
                                "try another model or raise the budget")
        elif budget.latency_ms is None:
            budget.check_reachable(space)  # before any training: fail fast
        log.info("%s at %s: %s MACs, %s params, %d width decisions, %d removable blocks", config.model,
                 "x".join(map(str, shape)), format_count(space.macs(full)), format_count(space.params(full)),
                 len(space.decision_groups), len(space.blocks))

    state = out / STATE_DIR
    if not trained and config.teacher_epochs > 0:
        with stage("teacher_training"):
            _train_teacher(model, config, train_loader, val_loader, device, state)
        model = model.cpu().eval()
        with stage("search_space"):  # channel rankings follow the trained weights
            space = SearchSpace.build(model, shape, config.model, channel_multiple=profile.channel_multiple)
    model = model.cpu().eval()
    measurable = measurable_here(profile)
    lat_model = None
    if budget.latency_ms is not None or (config.latency_table and not measurable):
        with stage("latency_model"):
            lat_model = _latency_model(space, model, profile, config, out, offline=not measurable)
        if budget.latency_ms is not None:
            budget = budget.with_latency_model(lat_model)
            if not notes:
                budget.check_reachable(space)
    baseline_acc = evaluate(model, val_loader, device=device, quiet=config.quiet)
    model = model.cpu().eval()

    with stage("search"):
        seed_everything(config.seed + 1)  # the search does not depend on what ran before it
        if notes:
            arch, history = full, []
        elif (state / "search.json").is_file():  # a resumed run: the search had finished
            arch, history = _searched(space, state / "search.json")
            log.info("search: resumed with the architecture found before")
        else:
            calibration = next(iter(make_loader(data.train, 32, shuffle=True, seed=config.seed)))[0]
            ctx = SearchContext(model=model, calibration=calibration, train_data=data.train, val_data=data.val,
                                batch_size=config.batch_size, epochs=config.search_epochs, device=device,
                                seed=config.seed, quiet=config.quiet, options=dict(config.options or {}))
            if budget.latency_ms is not None and measurable:
                ctx.measure = _target_measure(space, model, profile, shape, out)
            ctx.checkpoint = state / f"search-{config.method}.pt"  # tas, asng: per epoch; autoshrink: per step
            result = SEARCHERS[config.method](space, budget, ctx)
            arch, history = _agreed(result.architecture), result.history
            if is_main():
                write_json(state / "search.json", {"architecture": arch.to_dict(), "history": history})
        if not budget.fits(space, arch):
            raise AssertionError(f"searcher {config.method} returned an architecture over budget")

    with stage("materialize"):
        small = materialize(space, model, arch)

    latency_check = None
    if budget.latency_ms is not None and measurable:
        with stage("latency_check"):
            if is_main():  # rank 0 measures; the others take its architecture
                arch, small, latency_check = _meet_measured_latency(space, model, arch, small, budget, profile,
                                                                    shape, out)
            shared = Architecture.from_dict(broadcast_object(arch.to_dict()))
            if shared != arch:
                arch, small = shared, materialize(space, model, shared)
    closed = _delivered_costs(space, arch, small, shape)  # the delivered model's, after any latency repair

    with stage("fine_tuning"):
        seed_everything(config.seed + 2)
        if config.from_scratch:
            reinitialize(small)  # TAS's official code: train the pruned network from fresh weights
        if (arch != full or config.from_scratch) and config.epochs > 0:
            # a fresh loader: its shuffling must not depend on whether the teacher trained in this process
            train_loader = make_loader(data.train, config.batch_size, shuffle=True, seed=config.seed, shard=True)
            train(small, train_loader, config.epochs, lr=config.lr / 5, teacher=model, kd_lambda=config.kd_lambda,
                  temperature=config.temperature, device=device, val_loader=val_loader, quiet=config.quiet,
                  desc="fine-tune", checkpoint=state / "finetune.pt")
        small = small.cpu().eval()
        compressed_acc = evaluate(small, val_loader, device=device, quiet=config.quiet)
        small = small.cpu().eval()

    if not is_main():
        return {}  # rank 0 alone exports, measures and writes
    onnx_info, lats = deliver(out, small, arch, spec, shape, profile, stage, config.latency_runs, baseline=model,
                              measure=measurable)
    if not measurable:
        notes.append(f"latency was not measured: this machine is not the {profile.name} target; measure model.onnx "
                     f"and baseline.onnx there with `compress bench FILE --target {profile.name}` and merge the "
                     "results with `compress report`")
    write_json(out / "search.json", {"method": config.method, "history": history})
    notes.extend(getattr(data, "warnings", []))

    report = {
        "model": config.model,
        "weights": config.weights,
        "out": str(out),
        "target": profile.to_dict(),
        "method": config.method,
        "input_shape": list(shape),
        "train_resolution": config.train_resolution,
        "data": {"source": data.source, "train": len(data.train), "val": len(data.val),
                 "num_classes": data.num_classes},
        "budget": budget.to_dict(),
        "baseline": {**_costs(space, full), "accuracy": baseline_acc, "latency_ms": _pcts(lats.get("baseline"))},
        "compressed": {**closed, "accuracy": compressed_acc, "latency_ms": _pcts(lats.get("compressed"))},
        "predicted_latency_ms": {"baseline": lat_model.predict(full), "compressed": lat_model.predict(arch)}
        if lat_model is not None else None,
        "latency": lats,
        "onnx": onnx_info,
        "architecture": {"file": checkpoint.ARCH_FILE, "widths": arch.widths, "full_widths": full.widths,
                         "blocks": arch.blocks,
                         "dropped_blocks": [k for k, v in arch.blocks.items() if not v]},
        "fixed_layers": space.fixed_layers,
        "search": {"steps": len(history), "file": "search.json"},
        "latency_check": latency_check,
        "settings": config.settings(),
        "notes": notes,
        "timings_s": stage.seconds,
    }
    extra = ["baseline.onnx"] + (["latency_model.json"] if lat_model is not None else [])
    _finish(out, report, "run", budget, extra)
    return report


_ARTIFACTS = ("arch.json", "model.pt", "model.onnx", "search.json", "report.json", "report.md", "report.html")


def _finish(out: Path, report: dict, command: str, budget: Budget, extra: list[str]) -> None:
    """Write the reports and the manifest of what this run wrote, then drop the resume state (after the
    manifest: a run killed in between is finished, not lost)."""
    write_reports(out, report)
    write_manifest(out, {"command": command, **report["settings"], "budget": budget.to_dict(),
                         "data": report["data"]}, files=[*_ARTIFACTS, *extra])
    RunDir(out).finish()
    log.info("wrote %s", out)


def _delivered_costs(space: SearchSpace, arch: Architecture, small, shape) -> dict:
    """MACs and params of the model that ships, in closed form, checked against a count on the module."""
    closed = _costs(space, arch)
    counted = {"macs": count_macs(small, shape), "params": count_params(small)}
    if closed != counted:
        raise AssertionError(f"closed-form costs {closed} differ from counted {counted}")
    return closed


def deliver(out: Path, small, arch, spec, shape, profile: Profile, stage: "_Stages", runs: int | None,
            baseline=None, measure: bool = True) -> tuple[dict, dict]:
    """Save the model, export and verify ONNX, measure latency (of ``baseline`` too, if given)
    unless ``measure`` is false (a target this machine is not)."""
    remove_previous_artifacts(out)  # --overwrite into a finished run: none of its files is taken for ours
    with stage("export"):
        checkpoint.save(small, arch, spec, out)
        onnx_path = export_onnx(small, shape, out / "model.onnx", opset=ONNX_OPSET)
        parity = verify_onnx(small, onnx_path, shape)
        baseline_onnx = export_onnx(baseline, shape, out / "baseline.onnx", opset=ONNX_OPSET) if baseline else None
    lats: dict = {"compressed": None, "baseline": None}
    if measure:
        with stage("latency"):
            lats["compressed"] = _measure(onnx_path, profile, shape, runs, slowest=10)
            if baseline_onnx is not None:
                lats["baseline"] = _measure(baseline_onnx, profile, shape, runs)
    onnx_info = {"path": onnx_path.name, "opset": parity["opset"], "max_abs_diff": parity["max_abs_diff"],
                 "checker": parity["checker"]}
    return onnx_info, lats


def run_nas(config: RunConfig) -> dict:
    """Search a ShrinkCNN cell from scratch (AutoShrink), deploy it at the MAC budget, train, export, measure.

    Under torchrun the ranks split each step's candidates and train the deployed network with DDP;
    rank 0 alone exports, measures and writes (the other ranks return an empty dict).
    """
    if config.budget.macs is None:
        raise CompressError("compress nas needs --budget-macs: the found cell is stacked to fit it")
    profile = resolve_target(config.target)
    shape = parse_shape(config.input_shape) if config.input_shape else profile.input_shape
    return _in_run_dir(config, "shrinkcnn", lambda out: _run_nas(config, profile, shape, out))


def _run_nas(config: RunConfig, profile: Profile, shape, out: Path) -> dict:
    from .nas.shrinkcnn import run_nas as search_cell

    stage = _Stages()
    seed_everything(config.seed)
    device = pick_device(config.device)
    with stage("data"):
        data = load_data(config.data, resolution=config.train_resolution, seed=config.seed, quiet=config.quiet)
    with stage("search"):
        model, spec, snapshots = search_cell(data, config.budget.macs, shape, options=config.options,
                                             epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                                             seed=config.seed, device=device, quiet=config.quiet,
                                             state_dir=out / STATE_DIR)
    if not is_main():
        return {}  # rank 0 alone evaluates, exports, measures and writes
    val_loader = make_loader(data.val, config.batch_size, shuffle=False, seed=config.seed)
    accuracy = evaluate(model, val_loader, device=device, quiet=config.quiet)
    model = model.cpu().eval()
    space = SearchSpace.build(model, shape, spec.name, channel_multiple=profile.channel_multiple)
    arch = space.full()
    onnx_info, lats = deliver(out, model, arch, spec, shape, profile, stage, config.latency_runs)
    write_json(out / "search.json", {"method": "shrinkcnn", "snapshots": [s.to_dict() for s in snapshots]})
    report = {
        "model": "shrinkcnn", "out": str(out), "target": profile.to_dict(), "method": NAS_METHOD,
        "input_shape": list(shape), "train_resolution": config.train_resolution,
        "data": {"source": data.source, "train": len(data.train), "val": len(data.val),
                 "num_classes": data.num_classes},
        "budget": config.budget.to_dict(), "baseline": None,
        "compressed": {**_costs(space, arch), "accuracy": accuracy, "latency_ms": _pcts(lats["compressed"])},
        "latency": lats, "onnx": onnx_info, "spec": spec.to_dict(),
        "architecture": {"file": checkpoint.ARCH_FILE, "cell_edges": spec.kwargs.get("edges"),
                         "dropped_blocks": []},
        "fixed_layers": [], "search": {"steps": len(snapshots), "file": "search.json"},
        "settings": config.settings(), "notes": list(getattr(data, "warnings", [])),
        "timings_s": stage.seconds,
    }
    _finish(out, report, "nas", config.budget, [])
    return report


def _train_teacher(model, config: RunConfig, train_loader, val_loader, device, state: Path) -> None:
    """Train the original (or load it, when a resumed run had trained it already)."""
    done = state / "teacher.pt"
    if done.is_file():
        with restoring(done, "the teacher training") as weights:
            model.load_state_dict(weights)
        log.info("teacher: resumed with the weights trained before")
        return
    train(model, train_loader, config.teacher_epochs, lr=config.lr, device=device, val_loader=val_loader,
          quiet=config.quiet, desc="teacher", checkpoint=state / "teacher-training.pt")
    if is_main():
        write_torch(done, model.state_dict())


def latency_clock(profile: Profile) -> str:
    """How the latency table times layers: thread CPU time where that is exact (onnxruntime on one
    CPU thread, robust on a shared machine), else wall-clock time."""
    single = profile.measure.threads == 1 and measuring_runtime(profile) == "onnxruntime-cpu"
    return "cpu" if single else "wall"


def _latency_model(space, model, profile: Profile, config: RunConfig, out: Path, offline: bool = False):
    """The calibrated latency model for a latency budget, from (and into) the latency table;
    ``offline``: only read the table (measured on the target device, used elsewhere)."""
    from .latency import build_latency_model

    table = Path(config.latency_table) if config.latency_table else Path.home() / ".cache" / "compressor" / \
        f"latency-{profile.name}.json"
    if offline:
        lat = build_latency_model(space, model, profile, table, offline=True, quiet=config.quiet)
    else:
        lat = build_latency_model(space, model, profile, table, clock=latency_clock(profile),
                                  cache=config.latency_table is None, quiet=config.quiet)
    if is_main():
        write_json(out / "latency_model.json", lat.to_dict())
    return lat


def _target_measure(space, model, profile: Profile, shape, out: Path):
    """A function measuring an architecture's p50 latency on the target (rank 0 measures, every
    rank receives the same figure)."""
    def measure(arch) -> float:
        value = None
        if is_main():
            small = materialize(space, model, arch)
            path = export_onnx(small, shape, out / STATE_DIR / "measure.onnx", opset=ONNX_OPSET)
            value = _measure(path, profile, shape, None)["p50"]
        return broadcast_object(value)
    return measure


def _agreed(arch: Architecture) -> Architecture:
    """Rank 0's architecture on every rank. The searches reach the same one on every rank; should
    they not (nondeterministic GPU kernels), the disagreement is logged and rank 0's is used."""
    found = all_gather_object(arch.to_dict())
    if any(f != found[0] for f in found[1:]):
        log.warning("the ranks found different architectures (ranks %s differ from rank 0); using rank 0's",
                    [r for r, f in enumerate(found) if f != found[0]])
    return Architecture.from_dict(found[0])


def _meet_measured_latency(space, model, arch, small, budget: Budget, profile: Profile, shape, out: Path,
                           rounds: int = 3):
    """Measure the searched architecture on the target; while it is over the latency budget, scale
    the prediction by measured/predicted and repair the architecture to the budget again."""
    from .search import repair

    checks = []
    for _ in range(rounds):
        predicted = budget.latency.predict(arch)
        path = export_onnx(small, shape, out / STATE_DIR / "latency-check.onnx", opset=ONNX_OPSET)
        measured = _measure(path, profile, shape, None)["p50"]
        checks.append({"predicted_ms": predicted, "measured_ms": measured, "macs": space.macs(arch)})
        log.info("latency check: predicted %.3f ms, measured %.3f ms (budget %.3f ms)", predicted, measured,
                 budget.latency_ms)
        if measured <= budget.latency_ms:
            break
        budget.latency.rescale(measured / predicted)
        arch = repair(space, budget, arch).architecture
        small = materialize(space, model, arch)
    else:
        log.warning("measured latency %.3f ms is still over the %.3f ms budget after %d corrections",
                    checks[-1]["measured_ms"], budget.latency_ms, rounds)
    return arch, small, checks


def _searched(space: SearchSpace, path: Path) -> tuple[Architecture, list]:
    """The architecture and trace a resumed run's finished search saved, checked against the space."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        arch, history = Architecture.from_dict(saved["architecture"], str(path)), saved["history"]
        if not isinstance(history, list):
            raise TypeError("history is not a list")
        space.check(arch)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, CompressError) as exc:
        raise CompressError(f"cannot resume the search from {path} ({first_line(exc)}): it belongs to another run "
                            "or is damaged; delete it to search again") from None
    return arch, history


def _check_runs_at(model, resolution: int) -> None:
    """Raise CompressError unless ``model`` runs on training images of ``resolution``."""
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, 3, resolution, resolution))
    except Exception as exc:  # noqa: BLE001 - the user's model does not run at this size
        raise CompressError(
            f"the model does not run on {resolution}x{resolution} training images ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160]}); raise --train-resolution"
        ) from None


def _costs(space: SearchSpace, arch) -> dict:
    return {"macs": space.macs(arch), "params": space.params(arch)}


def _pcts(stats: dict | None) -> dict | None:
    return {k: stats[k] for k in ("p50", "p90", "p99")} if stats else None

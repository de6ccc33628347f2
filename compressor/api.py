"""``compressor.compress``: one call for a model you hold in memory (or a model name) and your own
data loaders (or a data path).

It is the same run as ``compress run`` (the same executor and stages). A model held in memory
replaces the ``model`` stage (``given_model``), DataLoaders the ``data`` stage (``given_data``); a
model name and a data path go through the stages ``compress run`` uses. The run directory records
what the call held in memory (setting ``in_memory``) and, for a model, its class path for
information only: ``compressor.load`` of the result needs ``model_fn=`` (a builder of the
original) and resuming needs the same call with ``resume=True``, never an import from a file (a
``compress --resume`` of such a run is refused).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from compress_base.errors import CompressError

from .budget import Budget
from .data import DataBundle
from .executor import execute
from .models import ModelSpec
from .pipeline import _initial_state
from .run_report import RunReport
from .run_state import RunState
from .search import check_options
from .settings import RunConfig, resume_config
from .stages import RUN_STAGES, prepare
from .target import resolve_target
from .units import parse_shape

PYTHON_SOURCE = "DataLoaders given in Python"
# RunConfig fields compress() sets itself: not among its **settings
_OWN = {"budget", "model", "data", "target", "method", "input_shape", "out", "overwrite", "resume", "trust_code",
        "in_memory"}


@dataclass
class CompressResult:
    """What :func:`compress` delivers: the compressed module, its architecture, the report and the
    run directory's files."""

    model: nn.Module
    architecture: object
    report: RunReport
    out: Path

    @property
    def paths(self) -> dict[str, Path]:
        """The run directory's artifacts by name (``model.onnx``, ``report.html``, ...)."""
        return {p.name: p for p in sorted(self.out.iterdir()) if p.is_file()}


def compress(model: nn.Module | str, *, train_loader: DataLoader | None = None, val_loader: DataLoader | None = None,
             data: str | Path | None = None, example_input: torch.Tensor | None = None, input_shape=None,
             budget: Budget | None = None, macs=None, params=None, latency_ms=None, target: str = "cpu",
             method: str = "greedy", trained: bool | None = None, out: str | None = None, overwrite: bool = False,
             resume: bool = False, **settings) -> CompressResult:
    """Compress ``model`` to a budget for ``target``.

    ``model`` is an ``nn.Module`` (trained unless ``trained=False``) or a name as ``compress run
    --model`` takes it (a torchvision or built-in name, or ``package.module:function``; with
    ``weights=`` among the settings it starts trained). The data are ``train_loader`` and
    ``val_loader``, yielding ``(images, labels)`` at the size the model trains and is evaluated at
    (the search uses their datasets at that size too), or ``data``, an ImageFolder or IDX folder
    read as ``compress run --data`` reads it. The deployment input is ``input_shape`` (CxHxW, a
    string like ``"3x224x224"`` or a tuple) or the shape of ``example_input`` (one image or a
    batch); a model name may leave both out (its native input, else the target's). The budget is
    ``budget`` or ``macs=`` / ``params=`` / ``latency_ms=``. ``settings`` are
    :class:`~compressor.settings.RunConfig` fields (``epochs``, ``teacher_epochs``, ``seed``,
    ``kd_lambda``, ``temperature``, ``weights``, ``num_classes``, ``options``, ``quiet``, ...). Bad
    arguments raise :class:`~compress_base.errors.CompressError` before any work.
    """
    held = _held(model, train_loader, val_loader, data, trained, settings)
    shape = _input_shape(example_input, input_shape, required="model" in held)
    named = model if isinstance(model, str) else _class_path(model)
    data = None if data is None else str(data)
    if resume:
        if out is None:
            raise CompressError("resume=True needs out=: the run directory of the call to continue")
        # the call names its model: a name is checked against run.json before the run imports it
        config = resume_config(out, quiet=settings.get("quiet", False), trust_code=True,
                               given=None if data is None else {"data": data}, in_memory=held or None)
        if config.model != named:
            raise CompressError(f"compress(resume=True): {out} was made with the model {config.model}, this call "
                                f"gives {named}: make the call that started it")
    else:
        budget = budget if budget is not None else Budget(macs=macs, params=params, latency_ms=latency_ms)
        config = RunConfig(budget=budget, model=named, data=data, target=target, method=method, out=out,
                           input_shape=None if shape is None else "x".join(map(str, shape)),
                           overwrite=overwrite, in_memory=held or None, **settings)
    check_options(config.method, config.options or {})
    if held == ["data"]:  # a model built by name needs its number of classes before it is built
        named_classes(train_loader.dataset, config.num_classes, config.model)
    profile = resolve_target(config.target, offline_ok=config.latency_table is not None
                             or config.budget.latency_ms is None)
    given = {"model": given_model, "data": given_data}  # the stages what the call holds replaces
    stages = [replace(s, run=given[s.name]) if s.name in held else s for s in RUN_STAGES]
    report = execute(config, stages, _state_maker(profile, model, trained is not False, train_loader, val_loader),
                     "python-model" if "model" in held else config.model)
    if report is None:
        raise CompressError("compress() ran on a torchrun rank other than 0: only rank 0 returns the result")
    from .architecture import Architecture
    from .artifact import ARCH_FILE, load

    out_dir = Path(config.out).absolute()
    small = _rebuilt(model, out_dir) if "model" in held else load(out_dir, trust_code=True)  # the caller named it
    return CompressResult(model=small, architecture=Architecture.load(out_dir / ARCH_FILE), report=report,
                          out=out_dir)


def _rebuilt(model: nn.Module, out: Path) -> nn.Module:
    """The compressed module, rebuilt from the run directory with the caller's model as the original."""
    from .artifact import load

    original = {k: v.clone() for k, v in model.state_dict().items()}
    return load(out, model_fn=lambda: _fresh_copy(model, original))


def _fresh_copy(model: nn.Module, state: dict) -> nn.Module:
    twin = copy.deepcopy(model)
    twin.load_state_dict(state)
    return twin


def _input_shape(example_input, input_shape, required: bool) -> tuple[int, int, int] | None:
    if input_shape is not None:
        return parse_shape(input_shape)
    if example_input is None:
        if not required:
            return None  # a model name: its native input, else the target's (as compress run)
        raise CompressError("compress() needs the deployment input: pass example_input= (a tensor) or "
                            "input_shape= (e.g. '3x224x224')")
    if not isinstance(example_input, torch.Tensor):
        raise CompressError(f"compress() takes a tensor as example_input, got {type(example_input).__name__}")
    dims = tuple(example_input.shape)
    return parse_shape(dims[1:] if len(dims) == 4 else dims)


def _held(model, train_loader, val_loader, data, trained, settings: dict) -> list[str]:
    """What the call holds in memory ("model", "data"), its arguments' kinds and combinations checked."""
    if not isinstance(model, (nn.Module, str)):
        raise CompressError(f"compress() takes an nn.Module or a model name as model, got {type(model).__name__}")
    if isinstance(model, str) and trained is not None:
        raise CompressError("trained= is for an nn.Module; a model name starts trained when weights= are given")
    loaders = (train_loader, val_loader)
    if data is not None and loaders != (None, None):
        raise CompressError("compress() takes either train_loader= and val_loader= or data= (a folder), not both")
    if data is None:
        if loaders == (None, None):
            raise CompressError("compress() needs data: train_loader= and val_loader= (DataLoaders), or data= (an "
                                "ImageFolder or IDX folder)")
        for name, loader in (("train_loader", train_loader), ("val_loader", val_loader)):
            if not isinstance(loader, DataLoader):
                raise CompressError(f"compress() takes a torch DataLoader as {name}, got {type(loader).__name__}")
    elif not isinstance(data, (str, Path)):
        raise CompressError(f"compress() takes a folder path as data, got {type(data).__name__}")
    unknown = sorted(set(settings) - ({f.name for f in fields(RunConfig)} - _OWN))
    if unknown:
        raise CompressError(f"compress() has no setting {unknown[0]!r}: see compressor.settings.RunConfig for them")
    return [k for k, held in (("model", isinstance(model, nn.Module)), ("data", data is None)) if held]


def _class_path(model: nn.Module) -> str:
    """The model's class as ``module:QualName`` (recorded for information; never imported)."""
    cls = type(model)
    return f"{cls.__module__}:{cls.__qualname__}"


def _state_maker(profile, model, trained, train_loader, val_loader):
    """The state before the first stage (as ``compress run``'s), with what the call holds in memory."""
    initial = _initial_state(profile)

    def make(config: RunConfig, out: Path) -> RunState:
        state = initial(config, out)
        if isinstance(model, nn.Module):
            state.model, state.trained = model, trained
        state.train_loader, state.val_loader = train_loader, val_loader
        return state
    return make


def given_data(state: RunState) -> None:
    """The caller's loaders: evaluation at their images' size, the search on their datasets."""
    from .resolution import Resolutions, proxy_note

    images, _ = next(iter(state.val_loader))
    if images.dim() != 4 or images.shape[1] != state.shape[0]:
        raise CompressError(f"val_loader yields images of shape {tuple(images.shape)}; the model's input is "
                            f"{'x'.join(map(str, state.shape))}: give batches of (N, C, H, W) images and labels")
    side = int(images.shape[-1])
    class_names = _class_names(state, side)
    state.resolutions = res = Resolutions(deployment=state.shape, search=side, evaluation=side)
    state.data = state.eval_data = DataBundle(
        train=state.train_loader.dataset, val=state.val_loader.dataset, num_classes=len(class_names),
        class_names=class_names, source=PYTHON_SOURCE, resolution=side)
    state.fresh_train_loader = lambda: state.train_loader
    note = proxy_note(res)
    if note:
        state.notes.append(note)


def _class_names(state: RunState, side: int) -> list[str]:
    """The classes: the outputs of the caller's model, else ``num_classes`` or the training dataset's
    ``classes`` (an ImageFolder's, a torchvision dataset's) for a model the run builds by name."""
    if isinstance(state.model, nn.Module):
        prepare.check_runs_at(state.model, side)
        return [str(i) for i in range(_num_outputs(state.model, side))]
    return named_classes(state.train_loader.dataset, state.config.num_classes, state.config.model)


def named_classes(dataset, num_classes: int | None, model: str) -> list[str]:
    """The class names for a model built by name from DataLoaders: ``num_classes`` of them, or the
    dataset's ``classes`` (an ImageFolder's, a torchvision dataset's, under any Subset)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    names = getattr(dataset, "classes", None)
    names = [str(n) for n in names] if isinstance(names, (list, tuple)) else None
    count = num_classes or (len(names) if names else None)
    if count is None:
        raise CompressError(f"compress() with the model name {model} and DataLoaders needs num_classes=: the "
                            "loaders' dataset has no classes list to count")
    return names if names and len(names) == count else [str(i) for i in range(count)]


def given_model(state: RunState) -> None:
    """A copy of the caller's model (theirs is never changed), its class path recorded (for information only)."""
    state.model = copy.deepcopy(state.model).cpu().eval()
    for side in sorted({state.resolutions.search, state.resolutions.evaluation}):
        prepare.check_runs_at(state.model, side)
    outputs = _num_outputs(state.model, state.resolutions.evaluation)
    for classes, what in ((state.data.num_classes, "the data have"), (state.config.num_classes, "num_classes is")):
        if classes not in (None, outputs):
            raise CompressError(f"the model has {outputs} outputs and {what} {classes} classes: give a model with "
                                "one output per class")
    state.spec = ModelSpec(state.config.model, outputs, {})


def _num_outputs(model: nn.Module, side: int) -> int:
    with torch.no_grad():
        logits = model.eval()(torch.zeros(1, 3, side, side))
    return int(logits.shape[-1])

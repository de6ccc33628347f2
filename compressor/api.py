"""``compressor.compress``: one call for a model you hold in memory and your own data loaders.

It is the same run as ``compress run`` (the same executor and stages), with two stages replaced:
the model comes from the caller (``given_model``) and so do the loaders (``given_data``). The
run directory records that the model came from Python: its class path, for information only;
``compressor.load`` of the result needs ``model_fn=`` (a builder of the original) and resuming
needs the same call with ``resume=True``, never an import from a file.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from compress_base.errors import CompressError

from .budget import Budget
from .data import DataBundle
from .executor import Stage, execute
from .models import ModelSpec
from .run_report import RunReport
from .run_state import RunState
from .runtime import seed_everything
from .search import check_options
from .settings import RunConfig, resume_config, run_runtime
from .stages import RUN_STAGES, prepare
from .target import resolve_target
from .units import parse_shape

PYTHON_SOURCE = "DataLoaders given in Python"


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


def compress(model: nn.Module, *, train_loader: DataLoader, val_loader: DataLoader,
             example_input: torch.Tensor | None = None, input_shape=None, budget: Budget | None = None,
             macs=None, params=None, latency_ms=None, target: str = "cpu", method: str = "greedy",
             trained: bool = True, out: str | None = None, overwrite: bool = False, resume: bool = False,
             **settings) -> CompressResult:
    """Compress ``model`` (an ``nn.Module``; trained unless ``trained=False``) to a budget for ``target``.

    The deployment input is ``input_shape`` (CxHxW, a string like ``"3x224x224"`` or a tuple) or the
    shape of ``example_input`` (one image or a batch); the loaders yield ``(images, labels)`` at the
    size the model trains and is evaluated at (the search uses their datasets at that size too).
    The budget is ``budget`` or ``macs=`` / ``params=`` / ``latency_ms=``. ``settings`` are
    :class:`~compressor.settings.RunConfig` fields (``epochs``, ``teacher_epochs``, ``seed``,
    ``kd_lambda``, ``temperature``, ``options``, ``quiet``, ...). Bad arguments raise
    :class:`~compress_base.errors.CompressError` before any work.
    """
    shape = _input_shape(example_input, input_shape)
    _check_inputs(model, train_loader, val_loader)
    if resume:
        if out is None:
            raise CompressError("resume=True needs out=: the run directory of the call to continue")
        config = resume_config(out, quiet=settings.get("quiet", False), trust_code=True)  # nothing is imported
    else:
        budget = budget if budget is not None else Budget(macs=macs, params=params, latency_ms=latency_ms)
        config = RunConfig(budget=budget, model=_class_path(model), target=target, method=method,
                           input_shape="x".join(map(str, shape)), out=out, overwrite=overwrite, **settings)
    check_options(config.method, config.options or {})
    profile = resolve_target(config.target, offline_ok=config.latency_table is not None
                             or config.budget.latency_ms is None)
    report = execute(config, API_STAGES, _state_maker(profile, shape, model, trained, train_loader, val_loader),
                     "python-model")
    if report is None:
        raise CompressError("compress() ran on a torchrun rank other than 0: only rank 0 returns the result")
    from .architecture import Architecture
    from .artifact import ARCH_FILE

    out_dir = Path(config.out)
    return CompressResult(model=_rebuilt(model, out_dir), architecture=Architecture.load(out_dir / ARCH_FILE),
                          report=report, out=out_dir)


def _rebuilt(model: nn.Module, out: Path) -> nn.Module:
    """The compressed module, rebuilt from the run directory with the caller's model as the original."""
    from .artifact import load

    original = {k: v.clone() for k, v in model.state_dict().items()}
    return load(out, model_fn=lambda: _fresh_copy(model, original))


def _fresh_copy(model: nn.Module, state: dict) -> nn.Module:
    twin = copy.deepcopy(model)
    twin.load_state_dict(state)
    return twin


def _input_shape(example_input, input_shape) -> tuple[int, int, int]:
    if input_shape is not None:
        return parse_shape(input_shape)
    if example_input is None:
        raise CompressError("compress() needs the deployment input: pass example_input= (a tensor) or "
                            "input_shape= (e.g. '3x224x224')")
    dims = tuple(example_input.shape)
    return parse_shape(dims[1:] if len(dims) == 4 else dims)


def _check_inputs(model, train_loader, val_loader) -> None:
    if not isinstance(model, nn.Module):
        raise CompressError(f"compress() takes an nn.Module as model, got {type(model).__name__}: build the model "
                            "first, or use compressor.pipeline.run for a model name")
    for name, loader in (("train_loader", train_loader), ("val_loader", val_loader)):
        if not isinstance(loader, DataLoader):
            raise CompressError(f"compress() takes a torch DataLoader as {name}, got {type(loader).__name__}")


def _class_path(model: nn.Module) -> str:
    """The model's class as ``module:QualName`` (recorded for information; never imported)."""
    cls = type(model)
    return f"{cls.__module__}:{cls.__qualname__}"


def _state_maker(profile, shape, model, trained, train_loader, val_loader):
    def make(config: RunConfig, out: Path) -> RunState:
        seed_everything(config.seed)
        runtime = run_runtime(config)
        state = RunState(config=config, out=out, profile=profile, shape=shape, runtime=runtime, budget=config.budget)
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
    num_classes = _num_classes(state.model, images)
    state.resolutions = res = Resolutions(deployment=state.shape, search=side, evaluation=side)
    state.data = state.eval_data = DataBundle(
        train=state.train_loader.dataset, val=state.val_loader.dataset, num_classes=num_classes,
        class_names=[str(i) for i in range(num_classes)], source=PYTHON_SOURCE, resolution=side)
    state.fresh_train_loader = lambda: state.train_loader
    note = proxy_note(res)
    if note:
        state.notes.append(note)


def given_model(state: RunState) -> None:
    """A copy of the caller's model (theirs is never changed), its class path recorded (for information only)."""
    state.spec = ModelSpec(state.config.model, state.data.num_classes, {})
    state.model = copy.deepcopy(state.model).cpu().eval()
    prepare.check_runs_at(state.model, state.resolutions.evaluation)


def _num_classes(model: nn.Module, images: torch.Tensor) -> int:
    with torch.no_grad():
        logits = model.eval()(images[:1].float())
    return int(logits.shape[-1])


_GIVEN = {"data": given_data, "model": given_model}
API_STAGES: list[Stage] = [replace(s, run=_GIVEN.get(s.name, s.run)) for s in RUN_STAGES]

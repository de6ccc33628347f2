"""The stages that prepare a run: data, model, search space, teacher, baseline accuracy."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from pathlib import Path

import torch

from compress_base.errors import CompressError
from compress_base.fileio import write_torch

from ..data import default_workers, load_data, make_loader
from ..distributed import is_main
from ..models import classification_models, resolve_model, torchvision_weights
from ..preprocess import Preprocess
from ..resolution import proxy_note, resolve
from ..resume import restoring
from ..run_state import RunState
from ..settings import is_path
from ..space import SearchSpace
from ..train import evaluate, train
from ..units import format_count

log = logging.getLogger(__name__)

TEACHER_FILE = "teacher.pt"  # in the run directory: the teacher this run trained, to reuse (--weights RUN_DIR)


def data(state: RunState) -> None:
    """Load the images at the search and the evaluation resolution (the same split), and the
    evaluation-resolution loaders for training (sharded under torchrun) and validation."""
    config, rt = state.config, state.runtime
    if state.shape[0] != 3:
        raise CompressError(f"input shape {'x'.join(map(str, state.shape))} has {state.shape[0]} channels; "
                            "the images have 3: use 3xHxW")
    state.resolutions = res = resolve(config, state.shape)
    preprocess = weights_preprocess(config.model, config.weights)
    state.data = load_data(config.data, resolution=res.search, seed=rt.seed, preprocess=preprocess)
    if res.evaluation == res.search:
        state.eval_data = state.data
    else:
        with _logs_once("compressor.data"):  # the same files and split: its warnings were logged above
            state.eval_data = load_data(config.data, resolution=res.evaluation, seed=rt.seed, preprocess=preprocess)
    workers = default_workers() if config.workers is None else config.workers
    state.fresh_train_loader = lambda: make_loader(state.eval_data.train, config.batch_size, shuffle=True,
                                                   seed=rt.seed, shard=True, workers=workers)
    state.train_loader = state.fresh_train_loader()
    state.val_loader = make_loader(state.eval_data.val, config.batch_size, shuffle=False, seed=rt.seed,
                                   workers=workers)
    state.notes.extend(state.data.warnings)
    note = proxy_note(res)
    if note:  # the report's notes and the summary line say it; no warning on every demo run
        state.notes.append(note)
        log.info(note)


def model(state: RunState) -> None:
    """Build the original model (the caller named it: trusted, see docs/SECURITY.md) with its weights."""
    config, data = state.config, state.data
    num_classes = config.num_classes or data.num_classes
    if num_classes != data.num_classes:
        raise CompressError(f"--num-classes {num_classes} does not match the data's {data.num_classes} "
                            "classes: drop --num-classes or use matching data")
    state.model, state.spec, state.trained = resolve_model(config.model, teacher_weights(config.weights),
                                                           num_classes, trust_code=True, search_cwd=config.search_cwd)
    for side in sorted({state.resolutions.search, state.resolutions.evaluation}):
        check_runs_at(state.model, side)


def search_space(state: RunState) -> None:
    """The search space at the deployment shape; fail fast on a budget no architecture meets."""
    config = state.config
    state.space = space = _build_space(state)
    state.full = space.full()
    state.budget = budget = state.budget.resolved(space)  # "50%" of the original: a count from here on
    if (budget.macs, budget.params) != (None, None) and budget.latency_ms is None \
            and replace(budget, latency_ms=None).fits(space, state.full):
        state.meets_budget = True
        state.notes.append("the model already meets the budget; it is kept as is")
        log.warning(state.notes[-1])
    elif not space.decisions():
        why = "; ".join(e["reason"] for e in space.fixed_layers) or "it has no prunable channel groups or blocks"
        raise CompressError(f"{config.model} has nothing the search can shrink ({why[:300]}); "
                            "try another model or raise the budget")
    elif budget.latency_ms is None:
        budget.check_reachable(space)  # before any training: fail fast
    log.info("%s at %s: %s MACs, %s params, %d width decisions, %d removable blocks", config.model,
             "x".join(map(str, state.shape)), format_count(space.macs(state.full)),
             format_count(space.params(state.full)), len(space.decision_groups), len(space.blocks))


def needs_teacher(state: RunState) -> bool:
    return not state.trained and state.config.teacher_epochs > 0


def teacher_training(state: RunState) -> None:
    """Train the original (or take the weights a resumed run trained), then rank its channels again."""
    config, rt = state.config, state.runtime
    done = state.state_dir / "teacher.pt"
    if done.is_file():
        with restoring(done, "the teacher training") as weights:
            state.model.load_state_dict(weights)
        log.info("teacher: resumed with the weights trained before")
    else:
        state.training["teacher"] = train(state.model, state.train_loader, config.teacher_epochs, lr=config.lr,
                                          runtime=rt, val_loader=state.val_loader, desc="teacher",
                                          checkpoint=state.state_dir / "teacher-training.pt")
        if is_main():
            write_torch(done, state.model.state_dict())
    state.teacher_trained = True
    state.model = state.model.cpu().eval()
    state.space = _build_space(state)  # channel rankings follow the trained weights


def evaluate_baseline(state: RunState) -> None:
    """The original's validation accuracy."""
    state.model = state.model.cpu().eval()
    state.baseline_accuracy = evaluate(state.model, state.val_loader, replace(state.runtime, amp=False))
    state.model = state.model.cpu().eval()


@contextlib.contextmanager
def _logs_once(name: str):
    """Hold back the warnings of logger ``name`` for the block."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def weights_preprocess(model: str, weights: str | None) -> Preprocess | None:
    """The preprocessing torchvision weights were trained with (None: the data's default)."""
    if weights is None or is_path("weights", weights) or model not in classification_models():
        return None
    return Preprocess.from_weights(torchvision_weights(model, weights))


def teacher_weights(weights: str | None) -> str | None:
    """``--weights``, where a run directory stands for the teacher it trained (its ``teacher.pt``)."""
    if weights is not None and Path(weights).is_dir():
        teacher = Path(weights) / TEACHER_FILE
        if not teacher.is_file():
            raise CompressError(f"--weights {weights} is a folder without {TEACHER_FILE}: give a state_dict file, a "
                                "torchvision weights name, or the folder of a run that trained its teacher")
        return str(teacher)
    return weights


def _build_space(state: RunState) -> SearchSpace:
    return SearchSpace.build(state.model, state.shape, state.config.model,
                             channel_multiple=state.profile.channel_multiple, keep=state.config.keep or ())


def check_runs_at(model, resolution: int) -> None:
    """Raise CompressError unless ``model`` runs on training images of ``resolution``."""
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, 3, resolution, resolution))
    except Exception as exc:  # noqa: BLE001 - the user's model does not run at this size
        raise CompressError(
            f"the model does not run on {resolution}x{resolution} training images ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160]}); raise --train-resolution"
        ) from None

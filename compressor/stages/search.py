"""The stages that shrink the model: search, materialize, fine-tune."""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Subset

from compress_base.errors import CompressError, first_line
from compress_base.fileio import write_json

from ..architecture import Architecture
from ..counting import count_macs, count_params
from ..data import make_loader
from ..distributed import all_gather_object, is_main
from ..run_state import RunState
from ..runtime import seed_everything
from ..search import SEARCHERS, SearchContext
from ..space import SearchSpace
from ..surgery import materialize as materialize_arch
from ..train import evaluate, reinitialize, train
from . import latency

log = logging.getLogger(__name__)

SEARCH_FILE = "search.json"  # in the state folder: the finished search, for --resume
HELD_OUT_IMAGES = 5000  # training images set aside for a search to score on


def search(state: RunState) -> None:
    """Find the architecture (the full one when the model meets the budget already); a resumed run
    takes the one its finished search saved."""
    config, rt = state.config, state.runtime
    seed_everything(rt.seed + 1)  # the search does not depend on what ran before it
    saved = state.state_dir / SEARCH_FILE
    if state.meets_budget:
        state.architecture, state.history = state.full, []
    elif saved.is_file():
        state.architecture, state.history = _searched(state.space, saved)
        log.info("search: resumed with the architecture found before")
    else:
        result = SEARCHERS[config.method](state.space, state.budget, _context(state))
        state.architecture, state.history = _agreed(result.architecture), result.history
        if result.budget is not None:  # recalibrated on the target while searching (autoshrink)
            state.budget = result.budget
        if is_main():
            write_json(saved, {"architecture": state.architecture.to_dict(), "history": state.history})
    if not state.budget.fits(state.space, state.architecture):
        raise AssertionError(f"searcher {config.method} returned an architecture over budget")


def held_out_split(train_data, seed: int) -> tuple[Subset, Subset]:
    """The training images a search trains on, and those it scores on (a seeded tenth, at most
    :data:`HELD_OUT_IMAGES`): a search never sees the validation images the report's accuracy comes from."""
    held = min(HELD_OUT_IMAGES, max(1, len(train_data) // 10))
    order = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(train_data, sorted(order[held:])), Subset(train_data, sorted(order[:held]))


def _context(state: RunState) -> SearchContext:
    config, rt, data = state.config, state.runtime, state.data
    calibration = next(iter(make_loader(data.train, 32, shuffle=True, seed=rt.seed)))[0]
    train_data, held_out = held_out_split(data.train, rt.seed)
    ctx = SearchContext(model=state.model, calibration=calibration, train_data=train_data, val_data=held_out,
                        batch_size=config.batch_size, epochs=config.search_epochs, runtime=rt,
                        options=dict(config.options or {}))
    if latency.needs_latency_check(state):
        ctx.measure = latency.target_measure(state)
    ctx.checkpoint = state.state_dir / f"search-{config.method}.pt"  # tas, asng: per epoch; autoshrink: per step
    return ctx


def materialize(state: RunState) -> None:
    """The compressed network, channels and blocks physically removed."""
    state.small = materialize_arch(state.space, state.model, state.architecture)


def fine_tuning(state: RunState) -> None:
    """Check the delivered model's costs, distil the original into it, and measure its accuracy."""
    config, rt = state.config, state.runtime
    check_costs(state.space, state.architecture, state.small, state.shape)
    seed_everything(rt.seed + 2)
    if config.from_scratch:
        reinitialize(state.small)  # TAS's official code: train the pruned network from fresh weights
    if (state.architecture != state.full or config.from_scratch) and config.epochs > 0:
        # a fresh loader: its shuffling must not depend on whether the teacher trained in this process
        loader = state.fresh_train_loader()
        state.training["fine-tune"] = train(state.small, loader, config.epochs, lr=config.lr / 5,
                                            teacher=state.model, kd_lambda=config.kd_lambda,
                                            temperature=config.temperature, runtime=rt,
                                            val_loader=state.val_loader, desc="fine-tune",
                                            checkpoint=state.state_dir / "finetune.pt")
    state.small = state.small.cpu().eval()
    state.accuracy = evaluate(state.small, state.val_loader, replace(rt, amp=False))  # fp32, as exported
    state.small = state.small.cpu().eval()


def check_costs(space: SearchSpace, arch: Architecture, small, shape) -> None:
    """The closed-form MACs and params of the model that ships equal a count on the module."""
    closed = {"macs": space.macs(arch), "params": space.params(arch)}
    counted = {"macs": count_macs(small, shape), "params": count_params(small)}
    if closed != counted:
        raise AssertionError(f"closed-form costs {closed} differ from counted {counted}")


def _agreed(arch: Architecture) -> Architecture:
    """Rank 0's architecture on every rank. The searches reach the same one on every rank; should
    they not (nondeterministic GPU kernels), the disagreement is logged and rank 0's is used."""
    found = all_gather_object(arch.to_dict())
    if any(f != found[0] for f in found[1:]):
        log.warning("the ranks found different architectures (ranks %s differ from rank 0); using rank 0's",
                    [r for r, f in enumerate(found) if f != found[0]])
    return Architecture.from_dict(found[0])


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

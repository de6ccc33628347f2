"""The one search loop: searchers that iterate implement their steps and state
(:class:`LoopSearcher`); :func:`run_loop` owns everything around them.

It seeds torch for the search (in a forked random state, so the caller's is untouched), builds
the searcher's state, restores it from ``context.checkpoint`` when a killed run left one there,
runs one unit (an epoch or a step) after another with one progress bar (rank 0 only, hidden when
quiet), appends each unit's record to the history, saves the state after every unit (rank 0
writes, :mod:`compressor.resume`) before reporting it as done (a line above the bar, where it stays
visible, or a log line where no bar shows: :func:`compressor.progress.show_line`), and leaves the
result to the searcher's :meth:`LoopSearcher.finish`.
"""
from __future__ import annotations

import logging
import math
from typing import ClassVar

import torch

from compress_base.errors import CompressError

from ..distributed import is_main
from ..progress import progress_bar, show_line
from ..resume import restoring, save_state
from ..runtime import pick_device
from .base import Searcher, SearchResult

log = logging.getLogger(__name__)


class LoopSearcher(Searcher):
    """A searcher run by :func:`run_loop`: it proposes and steps, the loop owns the loop.

    ``unit`` names one iteration ("epoch" or "step"), ``lower`` what to lower when a loss turns
    NaN or infinite. While the loop runs, ``self.bar`` is its progress bar and ``self.device``
    the device to compute on.
    """

    unit: ClassVar[str] = "epoch"
    lower: ClassVar[str] = "the learning rate"
    bar_unit: ClassVar[str] = "step"

    def prepare(self) -> SearchResult | None:
        """Check the inputs; a result when no search is needed (the full model fits), else None."""
        return None

    def setup(self) -> None:
        """Build the search state (in the seeded random state; before any restore)."""

    def bar_total(self) -> int | None:
        return None

    def bar_done(self, index: int) -> float:
        """Where the bar stands before unit ``index`` (a resumed search starts there)."""
        return 0

    def begin(self, done: int) -> None:
        """Called once before the first unit, after any restore, with the units already done (a
        resumed search replays its data order up to there)."""

    def done(self, index: int, history: list[dict]) -> bool:
        """Whether the search ends before unit ``index``."""
        raise NotImplementedError

    def step(self, index: int) -> dict | None:
        """Run unit ``index``; its history record, or None when nothing is left to do."""
        raise NotImplementedError

    def summary(self, record: dict) -> str:
        """One line on a unit's record, for the log."""
        return ""

    def state_dict(self) -> dict:
        """What a resumed search needs to continue exactly (saved after every unit)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""

    def close(self) -> None:
        """Release what the search holds (hooks on a model), whether it ended or failed."""

    def finish(self, history: list[dict]) -> SearchResult:
        raise NotImplementedError

    def total_units(self) -> int | None:
        """How many units the search takes at most, for the log (None: not known in advance)."""
        return None

    def check_finite(self, values, where: str) -> None:
        """One CompressError when a loss is NaN or infinite: the search diverged."""
        values = [float(v) for v in values]
        if not all(math.isfinite(v) for v in values):
            shown = values[0] if len(values) == 1 else tuple(values)
            raise CompressError(f"the {self.name} search diverged {where} (loss {shown}): lower {self.lower}")

    def search(self) -> SearchResult:
        early = self.prepare()
        return early if early is not None else run_loop(self)


class EpochSearcher(LoopSearcher):
    """A searcher of ``context.epochs`` epochs of ``self.steps`` steps each (``setup`` sets ``steps``):
    its bar counts steps, its log counts epochs."""

    steps: int = 0

    def bar_total(self) -> int:
        return self.steps * self.context.epochs

    def bar_done(self, index: int) -> int:
        return self.steps * (index - 1)

    def total_units(self) -> int:
        return self.context.epochs


def run_loop(searcher: LoopSearcher) -> SearchResult:
    """Run ``searcher`` to its end (see the module docstring) and return its result."""
    ctx = searcher.context
    searcher.device = device = pick_device(ctx.device)
    fork = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(ctx.seed)
        try:
            searcher.setup()
            history = _iterate(searcher)
        finally:
            searcher.close()
    return searcher.finish(history)


def _iterate(s: LoopSearcher) -> list[dict]:
    ctx, first, history = s.context, 1, []
    if ctx.checkpoint is not None and ctx.checkpoint.is_file():
        first, history = _restore(s, ctx.checkpoint)
        log.info("%s: resuming after %s %d from %s", s.name, s.unit, first - 1, ctx.checkpoint)
    s.begin(first - 1)
    s.bar = progress_bar(s.bar_total(), initial=s.bar_done(first), desc=s.name, unit=s.bar_unit,
                         quiet=ctx.quiet or not is_main())
    total = s.total_units()
    index = first
    try:
        while not s.done(index, history):
            record = s.step(index)
            if record is None:
                break
            history.append(record)
            if ctx.checkpoint is not None:  # before the unit is reported as done
                save_state(ctx.checkpoint, {s.unit: index, "history": history, "torch_rng": torch.get_rng_state(),
                                            "searcher": s.state_dict()})
            show_line(s.bar, f"{s.name} {s.unit} {index}{f'/{total}' if total else ''}: {s.summary(record)}", log)
            index += 1
    finally:
        s.bar.close()
    return history


def _restore(s: LoopSearcher, path) -> tuple[int, list[dict]]:
    with restoring(path, f"the {s.name} search") as state, torch.no_grad():
        s.load_state_dict(state["searcher"])
        torch.set_rng_state(state["torch_rng"])
        return int(state[s.unit]) + 1, list(state["history"])

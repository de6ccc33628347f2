"""Where and how a stage runs: the device, the seed and the verbosity, carried in one object, and
the one way this package makes a progress bar.

A stage takes a :class:`Runtime` instead of ``device=``, ``seed=`` and ``quiet=`` parameters.
Verbosity follows one rule for logs and bars alike: ``quiet`` hides both (the CLI sets logging to
WARNING); otherwise bars show when stderr is a terminal.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm


def progress_bar(total: int | None = None, *, desc: str, unit: str = "it", quiet: bool = False, initial: int = 0,
                 leave: bool = True, iterable=None) -> tqdm:
    """A tqdm bar, hidden when ``quiet`` and whenever stderr is not a terminal."""
    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, leave=leave,
                disable=True if quiet else None, dynamic_ncols=True)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so the same seed gives the same run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Runtime:
    """The device a stage computes on, its seed, and whether it is quiet."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    quiet: bool = False

    def bar(self, total: int | None = None, **kw) -> tqdm:
        """:func:`progress_bar` with this runtime's verbosity."""
        return progress_bar(total, quiet=self.quiet, **kw)

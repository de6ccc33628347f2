"""Where and how a stage runs: the device, the seed and the verbosity, carried in one object.

A stage takes a :class:`Runtime` instead of ``device=``, ``seed=`` and ``quiet=`` parameters; its
bars come from :func:`compressor.progress.progress_bar`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

from .progress import progress_bar


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

    def bar(self, total: int | None = None, **kw):
        """:func:`progress_bar` with this runtime's verbosity."""
        return progress_bar(total, quiet=self.quiet, **kw)

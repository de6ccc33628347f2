"""What every searcher takes and returns, and the interface a searcher implements."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from ..architecture import Architecture
from ..budget import Budget
from ..runtime import Runtime
from ..space import SearchSpace
from .options import NoOptions, SearchOptions


@dataclass
class SearchContext:
    """What a searcher may use besides the space and the budget.

    Searchers that train (TAS, ASNG, AutoShrink) use ``train_data``, split in halves for weight
    and architecture steps, and ``val_data`` for scoring: a run gives held-out training images there,
    never the validation images its report measures; ``epochs`` bounds their search.
    ``options`` carries method-specific settings from the CLI (``--option key=value``).
    ``runtime`` (device, seed, verbosity), when given, replaces ``device``, ``seed`` and ``quiet``.
    """

    model: nn.Module | None = None  # the full network the space was built on
    calibration: torch.Tensor | None = None  # a batch of training images
    train_data: Dataset | None = None
    val_data: Dataset | None = None
    batch_size: int = 64
    epochs: int = 5
    device: str | torch.device = "cpu"
    seed: int = 0
    quiet: bool = False
    options: dict = field(default_factory=dict)
    measure: Callable[[Architecture], float] | None = None  # latency (ms) of an architecture, on the target
    checkpoint: Path | None = None  # where a searcher that supports it keeps its state after every epoch or step
    runtime: Runtime | None = None

    def __post_init__(self):
        if self.runtime is not None:
            self.device, self.seed, self.quiet = self.runtime.device, self.runtime.seed, self.runtime.quiet


@dataclass
class SearchResult:
    """The chosen architecture and the searcher's trace of how it got there.

    ``budget`` is the budget the search ended with where it recalibrated a metric on the target
    (AutoShrink with ``context.measure`` rescales the latency model); else None.
    """

    architecture: Architecture
    history: list[dict] = field(default_factory=list)
    budget: Budget | None = None


class Searcher:
    """One search of ``space`` under ``budget``: :meth:`search` returns the result.

    Subclasses register with :func:`~compressor.search.registry.register` and set ``Options`` to
    their frozen options dataclass; the registry parses ``context.options`` into ``self.options``.
    Methods that iterate subclass :class:`~compressor.search.loop.LoopSearcher` instead.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[SearchOptions]] = NoOptions

    def __init__(self, space: SearchSpace, budget: Budget, context: SearchContext, options: SearchOptions):
        self.space, self.budget, self.context, self.options = space, budget, context, options

    def search(self) -> SearchResult:
        raise NotImplementedError

"""What every searcher takes and returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from ..architecture import Architecture


@dataclass
class SearchContext:
    """What a searcher may use besides the space and the budget.

    Searchers that train (TAS, ASNG, AutoShrink) use ``train_data``, split in halves for weight
    and architecture steps, and ``val_data`` for scoring; ``epochs`` bounds their search.
    ``options`` carries method-specific settings from the CLI (``--option key=value``).
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
    checkpoint: Path | None = None  # where a searcher that supports it keeps its state after every epoch


@dataclass
class SearchResult:
    """The chosen architecture and the searcher's trace of how it got there."""

    architecture: Architecture
    history: list[dict] = field(default_factory=list)

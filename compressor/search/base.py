"""What every searcher takes and returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..architecture import Architecture


@dataclass
class SearchContext:
    """What a searcher may use besides the space and the budget."""

    model: nn.Module | None = None  # the full network the space was built on
    calibration: torch.Tensor | None = None  # a batch of training images
    seed: int = 0
    quiet: bool = False


@dataclass
class SearchResult:
    """The chosen architecture and the searcher's trace of how it got there."""

    architecture: Architecture
    history: list[dict] = field(default_factory=list)

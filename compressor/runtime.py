"""Where and how a stage runs: the device, the seed and the verbosity, carried in one object.

A stage takes a :class:`Runtime` instead of ``device=``, ``seed=`` and ``quiet=`` parameters; its
bars come from :func:`compressor.progress.progress_bar`.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import numpy as np
import torch

from compress_base.errors import CompressError

from .progress import progress_bar


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``requested`` if usable, else CUDA when available, else CPU.

    ``None`` or ``"auto"`` picks CUDA when available (the GPU of ``LOCAL_RANK`` under torchrun).
    """
    if requested is None or str(requested) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise CompressError(
            f"device {str(requested)!r} is not a device name: use cpu, cuda, cuda:N or auto"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CompressError(f"device {device} requested but CUDA is not available: use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CompressError(
                f"device {device} requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist: use cuda:0 or auto"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise CompressError(f"device {device} requested but MPS is not available: use cpu")
    return device


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

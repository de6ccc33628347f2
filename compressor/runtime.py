"""Where and how a stage runs: the device, the seed, the verbosity, mixed precision and CPU threads.

A stage takes a :class:`Runtime` instead of ``device=``, ``seed=`` and ``quiet=`` parameters; its
bars come from :func:`compressor.progress.progress_bar`.

CPU threads under contention: PyTorch's OpenMP threads spin while they wait for each other, so a
second busy process on the same cores can slow an epoch down tens of times. :func:`prepare_openmp`
(called before PyTorch is imported) makes waiting threads sleep instead, and :func:`default_threads`
picks the thread count. This module imports PyTorch only inside its functions, so the CLI can call
:func:`prepare_openmp` first.
"""
from __future__ import annotations

import functools
import os
import random
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from compress_base.errors import CompressError

from .progress import progress_bar

if TYPE_CHECKING:
    import torch


def prepare_openmp() -> None:
    """Let OpenMP threads that wait sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``).

    OpenMP reads the setting once, when PyTorch loads it: call this before the first
    ``import torch``. A value the user set is kept; once PyTorch is loaded this does nothing.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call on this platform
        return os.cpu_count() or 1


def default_threads(current: int, cores: int, environ: Mapping[str, str] = os.environ) -> int:
    """The intra-op thread count for a run that did not ask for one.

    ``OMP_NUM_THREADS`` set by the user wins (``current``, PyTorch's count, already follows it).
    Otherwise every usable core when OpenMP's waiting threads sleep (``OMP_WAIT_POLICY=PASSIVE``,
    see :func:`prepare_openmp`), else all cores but one, so that one busy neighbour finds a free
    core instead of stalling a spinning thread; never more than ``current``, so a lower count set
    earlier in the process is kept.
    """
    if environ.get("OMP_NUM_THREADS"):
        return current
    passive = environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    return max(1, min(current, cores if passive else cores - 1))


@functools.cache
def _apply_default_threads() -> None:
    import torch

    torch.set_num_threads(default_threads(torch.get_num_threads(), usable_cores()))


def apply_threads(threads: int | None = None) -> int:
    """Set PyTorch's intra-op threads: ``threads`` when given, else :func:`default_threads`, chosen
    once per process. Returns the count in effect."""
    import torch

    if threads is None:
        _apply_default_threads()
    else:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``requested`` if usable, else CUDA when available, else CPU.

    ``None`` or ``"auto"`` picks CUDA when available (the GPU of ``LOCAL_RANK`` under torchrun).
    """
    import torch

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
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")


@dataclass(frozen=True)
class Runtime:
    """The device a stage computes on, its seed, whether it is quiet, and how it uses the device.

    ``amp``: automatic mixed precision in training and evaluation. ``None`` (the default) turns it
    on for CUDA (bfloat16 where the GPU supports it, else float16 with a gradient scaler) and
    leaves other devices in float32; ``True`` also turns it on for the CPU (bfloat16), ``False``
    turns it off. ``channels_last``: the model and 4-D inputs in channels-last memory format;
    ``None`` means on CUDA only. ``threads``: PyTorch's intra-op CPU threads, set when the runtime
    is made; ``None`` chooses by :func:`default_threads` once per process.
    """

    device: torch.device = field(default_factory=_cpu)
    seed: int = 0
    quiet: bool = False
    amp: bool | None = None
    channels_last: bool | None = None
    threads: int | None = None

    def __post_init__(self):
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise CompressError(f"threads {self.threads!r} must be a positive integer, e.g. 2")
        apply_threads(self.threads)

    def bar(self, total: int | None = None, **kw):
        """:func:`progress_bar` with this runtime's verbosity."""
        return progress_bar(total, quiet=self.quiet, **kw)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast type of training and evaluation, or ``None`` for float32."""
        import torch

        kind = self.device.type
        if self.amp is False or (self.amp is None and kind != "cuda"):
            return None
        if kind == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if kind == "cpu" else None

    @property
    def memory_format(self) -> torch.memory_format:
        """The memory format of the model and of 4-D inputs."""
        import torch

        on = self.device.type == "cuda" if self.channels_last is None else self.channels_last
        return torch.channels_last if on else torch.contiguous_format

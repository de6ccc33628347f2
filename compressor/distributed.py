"""Running under ``torchrun``: process group set-up, rank checks, and data sharding.

Teacher training and fine-tuning run with DistributedDataParallel over a DistributedSampler;
searches run the same seeded computation on every rank, so their decisions agree without
communication; rank 0 alone writes files and measures latency. CPU runs use gloo, GPU runs NCCL.
"""
from __future__ import annotations

import contextlib
import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by ``torchrun``."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """Rank 0, or the only process."""
    return rank() == 0


@contextlib.contextmanager
def process_group():
    """Initialise the process group when launched by torchrun (NCCL on GPUs, gloo on CPUs); tear it down."""
    started = False
    if launched_by_torchrun() and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
        started = True
        log.info("rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    try:
        yield
    finally:
        if started:
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (``obj`` itself in one process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when distributed, else unchanged."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

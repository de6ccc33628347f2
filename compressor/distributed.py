"""Running under ``torchrun``: process group set-up, rank checks and the collectives the stages use.

Teacher training, fine-tuning and the supernet training of ``tas`` and ``asng`` run with
DistributedDataParallel over a DistributedSampler: every rank trains on its own shard and the
gradients (of the weights, and of the architecture logits) are averaged, so every rank holds the
same weights and takes the same decisions. ``autoshrink`` and the ShrinkCNN cell search split
the candidates of a step among the ranks instead (:func:`map_over_ranks`). Rank 0 alone writes
files and measures latency. CPU runs use gloo, GPU runs NCCL.
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
    """This process's rank (0 in one process)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes share the work (1 in one process)."""
    return dist.get_world_size() if is_distributed() else 1


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


@contextlib.contextmanager
def local_rank_zero_first():
    """Run the block on the first process of each machine before the others (a download into the
    machine's cache happens once per machine; the others then find it there)."""
    first = int(os.environ.get("LOCAL_RANK", "0")) == 0
    if is_distributed() and not first:
        dist.barrier()
    try:
        yield
    finally:
        if is_distributed() and first:
            dist.barrier()


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


def all_gather_object(obj) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def map_over_ranks(fn, items) -> list:
    """``[fn(i, item) for i, item in enumerate(items)]``, with item ``i`` computed on rank ``i mod world``
    and the results gathered on every rank: independent pieces of work (candidates to score) split
    among the ranks."""
    items = list(items)
    mine = {i: fn(i, item) for i, item in enumerate(items) if i % world_size() == rank()}
    found = {i: result for part in all_gather_object(mine) for i, result in part.items()}
    return [found[i] for i in range(len(items))]


def all_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over the ranks, on every rank (``values`` itself in one process)."""
    if not is_distributed():
        return values
    out = values.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


def average_gradients(params) -> None:
    """Replace the gradient of each of ``params`` by its mean over the ranks (those without one are skipped)."""
    if not is_distributed():
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers into ``module`` on every rank, in place."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def wrap(model: torch.nn.Module, device: torch.device, find_unused: bool = False) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when distributed, else unchanged.

    ``find_unused``: some parameters may take no part in a forward pass (a search that drops
    blocks), so DDP must look for them after every backward pass.
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused)

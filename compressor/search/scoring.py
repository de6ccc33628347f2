"""Score an architecture by what it measurably loses: the full network with the architecture applied
as masks, its batch-norm statistics recalibrated, compared with the full network on held-out images.

Weight norms cannot compare channels of different layers (a stem channel and a deep one) nor tell
whether a block matters; the network's own outputs can. NetAdapt evaluates every proposal this way;
ModelOpt and OFA recalibrate batch norm before scoring a sub-network, because once channels go the
statistics the following layers were trained with no longer fit, and the score would say more about
stale statistics than about the channels.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from compress_base.errors import CompressError

from ..architecture import Architecture
from ..data import make_loader
from ..space import SearchSpace
from ..surgery import apply_masks


def _norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def recalibrated_batchnorm(model: nn.Module, batches: list[torch.Tensor]):
    """Within the block, every batch norm of ``model`` holds the statistics of its input over
    ``batches`` (the mean over batches of each batch's mean and unbiased variance, as training-mode
    batch norm records them), all other modules in eval mode; on leaving, the statistics, momentum and
    mode are restored."""
    norms = _norms(model)
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
             for m in norms]
    training = model.training
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: equal weight for every batch
            m.train()
        with torch.no_grad():
            for x in batches:
                model(x)
        model.eval()
        yield model
    finally:
        for m, (mean, var, count, momentum) in zip(norms, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
            m.momentum = momentum
        model.train(training)


def fixed_batches(dataset, batch_size: int, count: int, seed: int) -> list:
    """The first ``count`` batches of a seeded shuffle of ``dataset`` (``count`` 0: all of it,
    in order), kept in memory so that every candidate is scored on the same images."""
    source = dataset if count == 0 else _shuffled(dataset, seed)
    out = []
    for x, y in make_loader(source, batch_size, shuffle=False, seed=seed):
        if count and len(out) >= count:
            break
        out.append((x, y))
    if not out:
        raise CompressError("no images to score candidates with: provide training and validation data")
    return out


def _shuffled(dataset, seed: int) -> Subset:
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, order)


def random_subset(dataset, n: int, seed: int):
    """At most ``n`` samples of ``dataset``, drawn by ``seed`` (the dataset itself if it is no larger)."""
    if len(dataset) <= n:
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, sorted(order[:n]))


def _batches(images: torch.Tensor, size: int) -> list[torch.Tensor]:
    """``images`` in batches of at most ``size``, none of one image (batch norm needs two)."""
    batches = list(images.split(size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


@dataclass
class LossScorer:
    """The distillation loss of an architecture: KL(full network's predictions ‖ the architecture's)
    on fixed held-out images, after batch norm is recalibrated on other fixed images. Lower is better;
    the full architecture scores about 0 (only its recalibrated statistics differ)."""

    space: SearchSpace
    model: nn.Module
    calibration: list[torch.Tensor]
    held_out: list[torch.Tensor]

    def __post_init__(self):
        device = next(self.model.parameters()).device
        self.calibration = [x.to(device) for x in self.calibration]
        self.held_out = [x.to(device) for x in self.held_out]
        self.model.eval()
        with torch.no_grad():
            self._targets = [F.log_softmax(self.model(x), dim=1) for x in self.held_out]
        self.evaluations = 0

    @classmethod
    def from_data(cls, space: SearchSpace, model: nn.Module, data: Dataset, images: int, seed: int,
                  batch_size: int = 128) -> LossScorer:
        """Calibrate on ``images`` training images and score on ``images`` others (a seeded draw;
        half of ``data`` each where it holds fewer). Needs at least 4 images: batch norm cannot
        take its statistics from one."""
        if len(data) < 4:
            raise CompressError(f"{len(data)} images cannot score architectures: give at least 4 training images")
        drawn = torch.cat([x for x, _ in fixed_batches(data, batch_size, -(-2 * images // batch_size), seed)])
        half = min(images, len(drawn) // 2)
        return cls(space, model, _batches(drawn[:half], batch_size), _batches(drawn[half:2 * half], batch_size))

    def loss(self, arch: Architecture) -> float:
        """Mean KL divergence (nats per image) from the full network's predictions to ``arch``'s."""
        self.evaluations += 1
        total, count = 0.0, 0
        with apply_masks(self.space, self.model, arch), recalibrated_batchnorm(self.model, self.calibration), \
                torch.no_grad():
            for x, target in zip(self.held_out, self._targets):
                out = F.log_softmax(self.model(x), dim=1)
                total += float(F.kl_div(out, target, log_target=True, reduction="sum"))
                count += len(x)
        return total / count

"""How AutoShrink scores a candidate on proxy data (docs/ALGORITHMS.md, section autoshrink): with
shared weights (:class:`SharedScorer`: masks, a short fine-tune, batch-norm re-estimation) or from
scratch (:class:`ScratchScorer`, the official code's way), and the data helpers both use (also
ShrinkCNN's cell search)."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from compress_base.errors import CompressError

from ..architecture import Architecture
from ..data import make_loader
from ..distributed import broadcast_module
from ..surgery import apply_masks, materialize
from ..train import logits_of, reinitialize
from .scoring import fixed_batches, random_subset

__all__ = ["ScratchScorer", "SharedScorer", "train_from_scratch"]


# ---------------------------------------------------------------------- data helpers
class _Batches:
    """An endless, seeded stream of training batches (a new shuffle every pass)."""

    def __init__(self, dataset, batch_size: int, seed: int):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.epoch = 0  # passes started
        self.position = 0  # batches drawn in the current pass
        self._it = None

    def take(self, n: int) -> list:
        out = []
        fresh = False
        while len(out) < n:
            if self._it is None:
                self._it = iter(make_loader(self.dataset, self.batch_size, shuffle=True, seed=self.seed + self.epoch))
                self.epoch += 1
                self.position = 0
                fresh = True
            try:
                out.append(next(self._it))
                self.position += 1
                fresh = False
            except StopIteration:
                self._it = None
                if fresh:
                    raise CompressError("the training set yields no batches: provide training images") from None
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        """Continue where a stream with ``state`` stood (replaying the current pass up to it)."""
        self.epoch, self._it = max(int(state["epoch"]) - 1, 0), None
        if int(state["epoch"]) > 0:
            self.take(int(state["position"]))


@torch.no_grad()
def _accuracy(model: nn.Module, batches: list, device) -> float:
    was = model.training
    model.eval()
    correct = seen = 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        correct += int((logits_of(model(x)).argmax(1) == y).sum())
        seen += y.numel()
    model.train(was)
    return correct / max(seen, 1)


def _sgd_steps(model: nn.Module, batches: list, lr: float, device, check) -> None:
    if not batches:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-5)
    model.train()
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(logits_of(model(x)), y)
        check([loss.item()], "in fine-tuning")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()


@torch.no_grad()
def _recalibrate_bn(model: nn.Module, batches: list, device) -> None:
    """Re-estimate batch-norm running statistics on ``batches`` (exact averages, no momentum)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or not batches:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for x, _ in batches:
            model(x.to(device))
    finally:
        for m, mom in zip(norms, saved):
            m.momentum = mom
        model.eval()


# ---------------------------------------------------------------------- candidate scoring
class SharedScorer:
    """Scores candidates with shared weights: masks + short fine-tune on a supernet.

    ``check(losses, where)`` raises when a fine-tuning loss is NaN or infinite."""

    def __init__(self, space, context, opts, device, check):
        self.space, self.opts, self.device, self.check = space, opts, device, check
        self.supernet = copy.deepcopy(context.model).to(device).eval()
        self.train = _Batches(context.train_data, context.batch_size, context.seed)
        self.val = fixed_batches(context.val_data, context.batch_size, opts.eval_batches, context.seed)
        self.step_batches: list = []
        self.calib_batches: list = []
        self.saved: dict | None = None

    def begin_step(self, step: int) -> None:
        self.step_batches = self.train.take(self.opts.finetune_steps)
        self.calib_batches = self.train.take(self.opts.calib_batches)
        self.saved = {k: v.detach().clone() for k, v in self.supernet.state_dict().items()}

    def accuracy(self, arch: Architecture, seed: int) -> float:
        torch.manual_seed(seed)
        try:
            with apply_masks(self.space, self.supernet, arch):
                _sgd_steps(self.supernet, self.step_batches, self.opts.finetune_lr, self.device, self.check)
                _recalibrate_bn(self.supernet, self.calib_batches, self.device)
                return _accuracy(self.supernet, self.val, self.device)
        finally:
            self.supernet.load_state_dict(self.saved)

    def commit(self, arch: Architecture, seed: int) -> None:
        self.saved = None
        torch.manual_seed(seed)
        batches = self.train.take(self.opts.commit_steps)
        with apply_masks(self.space, self.supernet, arch):
            _sgd_steps(self.supernet, batches, self.opts.finetune_lr, self.device, self.check)
        broadcast_module(self.supernet)  # every rank committed alike; rank 0's copy settles any rounding

    def state_dict(self) -> dict:
        return {"supernet": self.supernet.state_dict(), "train": self.train.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.train.load_state_dict(state["train"])


class ScratchScorer:
    """Scores candidates as the official code does: materialize, re-initialise, train with Adam."""

    def __init__(self, space, context, opts, device, check=None):
        self.space, self.opts, self.device = space, opts, device
        self.epochs = opts.scratch_epochs or max(1, int(context.epochs))
        self.model = copy.deepcopy(context.model).cpu().eval()  # materialize traces on the CPU
        self.batch_size = context.batch_size
        self.seed = context.seed
        self.train_set = random_subset(context.train_data, opts.scratch_train_images, context.seed)
        self.val = fixed_batches(random_subset(context.val_data, opts.scratch_val_images, context.seed + 1),
                                  context.batch_size, 0, context.seed)

    def begin_step(self, step: int) -> None:
        pass

    def accuracy(self, arch: Architecture, seed: int) -> float:
        torch.manual_seed(seed)
        net = reinitialize(materialize(self.space, self.model, arch)).to(self.device)
        return train_from_scratch(net, self.train_set, self.val, epochs=self.epochs,
                                  lr=self.opts.scratch_lr, patience=self.opts.patience,
                                  batch_size=self.batch_size, seed=seed, device=self.device)

    def commit(self, arch: Architecture, seed: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def train_from_scratch(model: nn.Module, train_set, val_batches: list, epochs: int, lr: float = 4e-3,
                       patience: int = 3, batch_size: int = 64, seed: int = 0, device="cpu") -> float:
    """Train ``model`` with Adam for at most ``epochs`` epochs, stopping early after ``patience``
    epochs without a better validation accuracy; returns the best validation accuracy."""
    model.to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    best, since = 0.0, 0
    for epoch in range(epochs):
        model.train()
        for x, y in make_loader(train_set, batch_size, shuffle=True, seed=seed + epoch):
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(logits_of(model(x)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        acc = _accuracy(model, val_batches, device)
        if acc > best:
            best, since = acc, 0
        else:
            since += 1
            if since >= patience:
                break
    model.eval()
    return best

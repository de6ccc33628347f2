"""Training and evaluation of classifiers, with optional knowledge distillation from a teacher."""
from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from compress_base.errors import CompressError

from .distributed import wrap
from .progress import show_line
from .resume import restoring, save_state
from .runtime import Runtime

logger = logging.getLogger(__name__)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    lam: float = 0.9,
    T: float = 4.0,
) -> torch.Tensor:
    """Hinton distillation loss: ``(1-lam)*CE(s, y) + lam*T^2*KL(softmax(t/T) || softmax(s/T))``.

    The KL term is averaged over the batch; no gradient flows into the teacher logits.
    """
    ce = F.cross_entropy(student_logits, targets)
    kl = F.kl_div(
        F.log_softmax(student_logits / T, dim=1),
        F.log_softmax(teacher_logits.detach() / T, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1.0 - lam) * ce + lam * T * T * kl


def logits_of(output) -> torch.Tensor:
    """Class logits from a model output: a tensor, an object with ``.logits``, or a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):  # torchvision Inception/GoogLeNet outputs, HF-style outputs
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find class logits in a model output of type {type(output).__name__}")


def _save_checkpoint(path, epoch, history, model, optimizer, scheduler, loader, scaler) -> None:
    state = {
        "epoch": epoch,
        "history": history,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "loader_rng": loader.generator.get_state() if loader.generator is not None else None,
    }
    save_state(path, state)


def _restore(path, model, optimizer, scheduler, loader, scaler, desc: str) -> tuple[int, list]:
    """Load a training checkpoint into the objects; return the last finished epoch and the history."""
    with restoring(path, f"the {desc} stage") as state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # float16 training; absent in checkpoints of older versions
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state["loader_rng"] is not None and loader.generator is not None:
            loader.generator.set_state(state["loader_rng"])
        return int(state["epoch"]), list(state["history"])


def reinitialize(model: nn.Module) -> nn.Module:
    """Fresh parameters for every module that can reset its own (``reset_parameters``), in place."""
    for m in model.modules():
        if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
            m.reset_parameters()
    return model


def evaluate(model: nn.Module, loader: DataLoader, runtime: Runtime | None = None) -> float:
    """Top-1 accuracy of ``model`` over ``loader``, in [0, 1], on the runtime's device (default: the
    CPU, quiet), in its mixed precision and memory format; restores the model's mode and format."""
    runtime = runtime or Runtime(quiet=True)
    _place(model, runtime)
    try:
        return _accuracy(model, loader, runtime)
    finally:
        _unplace(model, runtime)


@torch.no_grad()
def _accuracy(model: nn.Module, loader: DataLoader, runtime: Runtime) -> float:
    """Top-1 accuracy of a model already on the runtime's device; restores its mode."""
    device = runtime.device
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for x, y in runtime.bar(iterable=loader, desc="eval", unit="batch", leave=False):
        x, y = _inputs(x, runtime), y.to(device, non_blocking=True)
        with _autocast(runtime):
            logits = logits_of(model(x))
        correct += (logits.argmax(dim=1) == y).sum()
        seen += y.numel()
    model.train(was_training)
    if seen == 0:
        raise CompressError("cannot evaluate on an empty dataset: provide validation images")
    return correct.item() / seen


def _place(model: nn.Module, runtime: Runtime) -> None:
    """Move the model to the runtime's device and memory format; let cuDNN pick its fastest kernels."""
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if runtime.memory_format is torch.channels_last:
        model.to(runtime.device, memory_format=torch.channels_last)
    else:
        model.to(runtime.device)


def _device_of(model: nn.Module) -> torch.device:
    """The device of the model's first tensor (the CPU for a model without any)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device


def _unplace(model: nn.Module, runtime: Runtime) -> None:
    """Give the weights back in the ordinary (contiguous) memory format."""
    if runtime.memory_format is torch.channels_last:
        model.to(memory_format=torch.contiguous_format)


def _inputs(x: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """A batch of inputs on the runtime's device, images in its memory format."""
    if x.dim() == 4 and runtime.memory_format is torch.channels_last:
        return x.to(runtime.device, non_blocking=True, memory_format=torch.channels_last)
    return x.to(runtime.device, non_blocking=True)


def _autocast(runtime: Runtime):
    """Autocast to the runtime's mixed-precision type, or nothing in float32."""
    dtype = runtime.amp_dtype
    return contextlib.nullcontext() if dtype is None else torch.autocast(runtime.device.type, dtype=dtype)


def train(
    model: nn.Module,
    train_loader: DataLoader,
    epochs: int,
    lr: float = 0.05,
    teacher: nn.Module | None = None,
    kd_lambda: float = 0.9,
    temperature: float = 4.0,
    runtime: Runtime | None = None,
    weight_decay: float = 5e-4,
    val_loader: DataLoader | None = None,
    desc: str = "train",
    checkpoint: str | Path | None = None,
) -> list[dict]:
    """Train ``model`` in place with SGD (momentum 0.9, Nesterov) and a per-step cosine schedule.

    With a ``teacher`` the loss is :func:`kd_loss` (``kd_lambda``, ``temperature``); the teacher
    runs in eval mode without gradients. Returns one dict per epoch: ``epoch``, ``loss``,
    ``train_acc``, ``lr``, ``seconds`` and, with a ``val_loader``, ``val_acc``. Runs on the
    runtime's device (default: the CPU, quiet); shows a progress bar, or logs a line per epoch when
    quiet or not on a terminal. Under torchrun the model trains in DistributedDataParallel (give it
    a loader made with ``shard=True``).

    Mixed precision and memory format follow the runtime (:attr:`Runtime.amp_dtype`,
    :attr:`Runtime.memory_format`): the forward passes run in autocast, the loss is computed in
    float32, and float16 gradients go through a gradient scaler. A float16 step whose loss
    overflowed is skipped by the scaler and left out of the epoch's loss; training has diverged when
    the epoch's loss is not finite, or (float16) when half of its steps or more overflowed.

    With ``checkpoint`` (a file path) the state after every epoch (weights, optimiser, schedule,
    gradient scaler, random generators, history) is written there atomically, and a later call with
    the same path continues from the last finished epoch, giving the same result as an
    uninterrupted run.
    """
    _check_settings(epochs, lr, kd_lambda, temperature)
    if epochs == 0:
        return []
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise CompressError("the training set yields no batches: provide training images")
    runtime = runtime or Runtime(quiet=True)
    was_training = model.training
    _place(model, runtime)
    if teacher is not None:  # borrowed: it goes back where it came from afterwards
        teacher_device = _device_of(teacher)
        _place(teacher, runtime)
        teacher.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype is torch.float16)
    step = _Step(wrap(model, runtime.device), teacher, optimizer, scheduler, scaler, runtime, kd_lambda, temperature)

    history: list[dict] = []
    first = 1
    if checkpoint is not None and Path(checkpoint).is_file():
        done, history = _restore(checkpoint, model, optimizer, scheduler, train_loader, scaler, desc)
        first = done + 1
        logger.info("%s: resuming after epoch %d from %s", desc, first - 1, checkpoint)
    bar = runtime.bar(epochs * steps_per_epoch, initial=(first - 1) * steps_per_epoch, desc=desc, unit="batch")
    try:
        for epoch in range(first, epochs + 1):
            record = _epoch(step, train_loader, epoch, bar)
            if val_loader is not None:
                record["val_acc"] = _accuracy(model, val_loader, replace(runtime, quiet=True))
            record["seconds"] = time.perf_counter() - record.pop("start")
            history.append(record)
            _show(record, desc, epochs, bar)
            if checkpoint is not None:
                _save_checkpoint(checkpoint, epoch, history, model, optimizer, scheduler, train_loader, scaler)
    finally:
        bar.close()
        _unplace(model, runtime)
        if teacher is not None:
            _unplace(teacher, runtime)
            teacher.to(teacher_device)
        model.train(was_training)
    return history


def _check_settings(epochs, lr, kd_lambda, temperature) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise CompressError(f"epochs {epochs!r} must be a non-negative integer, e.g. 5")
    if not lr > 0:
        raise CompressError(f"learning rate {lr!r} must be positive, e.g. 0.05")
    if not 0.0 <= kd_lambda <= 1.0:
        raise CompressError(f"distillation weight {kd_lambda!r} must lie in [0, 1], e.g. 0.9")
    if not temperature > 0:
        raise CompressError(f"distillation temperature {temperature!r} must be positive, e.g. 4")


@dataclass
class _Step:
    """One optimisation step: the (possibly DDP-wrapped) network, its teacher, optimiser and scaler."""

    net: nn.Module
    teacher: nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    runtime: Runtime
    kd_lambda: float
    temperature: float

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and logits of one batch, after the step."""
        with _autocast(self.runtime):
            logits = logits_of(self.net(x))
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_logits = logits_of(self.teacher(x))
        logits = logits.float()  # the loss in float32 whatever the autocast type
        if self.teacher is None:
            loss = F.cross_entropy(logits, y)
        else:
            loss = kd_loss(logits, teacher_logits.float(), y, self.kd_lambda, self.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)  # skipped when float16 gradients overflowed
        self.scaler.update()
        with warnings.catch_warnings():  # the schedule counts skipped steps too, as intended
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.scheduler.step()
        return loss.detach(), logits.detach()


def _epoch(step: _Step, loader: DataLoader, epoch: int, bar) -> dict:
    """Train one epoch; its record (loss, training accuracy, learning rate, start time)."""
    if hasattr(loader.sampler, "set_epoch"):  # DistributedSampler reshuffles
        loader.sampler.set_epoch(epoch)
    runtime = step.runtime
    device = runtime.device
    start = time.perf_counter()
    step.net.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = steps = 0
    # float16 only: the steps whose loss overflowed (the scaler skipped them) and the samples of the others
    overflowed = torch.zeros((), dtype=torch.long, device=device)
    counted = torch.zeros((), dtype=torch.long, device=device)
    for x, y in loader:
        x, y = _inputs(x, runtime), y.to(device, non_blocking=True)
        loss, logits = step(x, y)
        if step.scaler.is_enabled():
            finite = torch.isfinite(loss)
            overflowed += ~finite
            counted += finite * y.numel()
            loss_sum += torch.where(finite, loss * y.numel(), 0.0)
        else:
            loss_sum += loss * y.numel()
        correct += (logits.argmax(dim=1) == y).sum()
        seen += y.numel()
        steps += 1
        bar.update()
    if step.scaler.is_enabled():
        n = counted.item()
        loss = loss_sum.item() / n if n and 2 * overflowed.item() < steps else math.nan
    else:
        loss = loss_sum.item() / seen
    record = {"epoch": epoch, "loss": loss, "train_acc": correct.item() / seen,
              "lr": step.optimizer.param_groups[0]["lr"], "start": start}
    if not math.isfinite(record["loss"]):
        raise CompressError(f"training diverged (loss {record['loss']} in epoch {epoch}): lower the learning rate")
    return record


def _show(record: dict, desc: str, epochs: int, bar) -> None:
    """The epoch's figures as a line: above the bar (where it stays visible), or logged when the bar is hidden."""
    summary = f"loss {record['loss']:.4f} acc {record['train_acc']:.3f}" + (
        f" val {record['val_acc']:.3f}" if "val_acc" in record else "")
    show_line(bar, f"{desc} epoch {record['epoch']}/{epochs}: {summary} ({record['seconds']:.1f}s)", logger)
    if not bar.disable:
        bar.set_postfix_str(f"ep {record['epoch']}/{epochs} {summary}")

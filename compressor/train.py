"""Training and evaluation of classifiers, with optional knowledge distillation from a teacher."""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .distributed import wrap
from .errors import CompressError
from .progress import progress_bar
from .resume import restoring, save_state

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


def logits_of(output) -> torch.Tensor:
    """Class logits from a model output: a tensor, an object with ``.logits``, or a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):  # torchvision Inception/GoogLeNet outputs, HF-style outputs
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find class logits in a model output of type {type(output).__name__}")


def _save_checkpoint(path, epoch, history, model, optimizer, scheduler, loader) -> None:
    state = {
        "epoch": epoch,
        "history": history,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "loader_rng": loader.generator.get_state() if loader.generator is not None else None,
    }
    save_state(path, state)


def _restore(path, model, optimizer, scheduler, loader, desc: str) -> tuple[int, list]:
    """Load a training checkpoint into the objects; return the last finished epoch and the history."""
    with restoring(path, f"the {desc} stage") as state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
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


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, device: str | torch.device = "cpu", quiet: bool = False
) -> float:
    """Top-1 accuracy of ``model`` over ``loader``, in [0, 1]; restores the model's mode."""
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for x, y in progress_bar(iterable=loader, desc="eval", unit="batch", leave=False, quiet=quiet):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        correct += (logits_of(model(x)).argmax(dim=1) == y).sum()
        seen += y.numel()
    model.train(was_training)
    if seen == 0:
        raise CompressError("cannot evaluate on an empty dataset: provide validation images")
    return correct.item() / seen


def train(
    model: nn.Module,
    train_loader: DataLoader,
    epochs: int,
    lr: float = 0.05,
    teacher: nn.Module | None = None,
    kd_lambda: float = 0.9,
    temperature: float = 4.0,
    device: str | torch.device = "cpu",
    weight_decay: float = 5e-4,
    val_loader: DataLoader | None = None,
    quiet: bool = False,
    desc: str = "train",
    checkpoint: str | Path | None = None,
) -> list[dict]:
    """Train ``model`` in place with SGD (momentum 0.9, Nesterov) and a per-step cosine schedule.

    With a ``teacher`` the loss is :func:`kd_loss` (``kd_lambda``, ``temperature``); the teacher
    runs in eval mode without gradients. Returns one dict per epoch: ``epoch``, ``loss``,
    ``train_acc``, ``lr``, ``seconds`` and, with a ``val_loader``, ``val_acc``. Shows a progress
    bar, or logs a line per epoch when ``quiet`` or not on a terminal. Under torchrun the model
    trains in DistributedDataParallel (give it a loader made with ``shard=True``).

    With ``checkpoint`` (a file path) the state after every epoch (weights, optimiser, schedule,
    random generators, history) is written there atomically, and a later call with the same path
    continues from the last finished epoch, giving the same result as an uninterrupted run.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise CompressError(f"epochs {epochs!r} must be a non-negative integer, e.g. 5")
    if not lr > 0:
        raise CompressError(f"learning rate {lr!r} must be positive, e.g. 0.05")
    if not 0.0 <= kd_lambda <= 1.0:
        raise CompressError(f"distillation weight {kd_lambda!r} must lie in [0, 1], e.g. 0.9")
    if not temperature > 0:
        raise CompressError(f"distillation temperature {temperature!r} must be positive, e.g. 4")
    if epochs == 0:
        return []
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise CompressError("the training set yields no batches: provide training images")

    device = torch.device(device)
    was_training = model.training
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    net = wrap(model, device)  # DistributedDataParallel under torchrun, else the model itself
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=epochs * steps_per_epoch
    )

    history: list[dict] = []
    first = 1
    if checkpoint is not None and Path(checkpoint).is_file():
        done, history = _restore(checkpoint, model, optimizer, scheduler, train_loader, desc)
        first = done + 1
        logger.info("%s: resuming after epoch %d from %s", desc, first - 1, checkpoint)
    bar = progress_bar(epochs * steps_per_epoch, initial=(first - 1) * steps_per_epoch, desc=desc, unit="batch",
                       quiet=quiet)
    try:
        for epoch in range(first, epochs + 1):
            if hasattr(train_loader.sampler, "set_epoch"):  # DistributedSampler reshuffles
                train_loader.sampler.set_epoch(epoch)
            start = time.perf_counter()
            model.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            seen = 0
            for x, y in train_loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = logits_of(net(x))
                if teacher is None:
                    loss = F.cross_entropy(logits, y)
                else:
                    with torch.no_grad():
                        teacher_logits = logits_of(teacher(x))
                    loss = kd_loss(logits, teacher_logits, y, kd_lambda, temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach() * y.numel()
                correct += (logits.detach().argmax(dim=1) == y).sum()
                seen += y.numel()
                bar.update()
            record = {
                "epoch": epoch,
                "loss": loss_sum.item() / seen,
                "train_acc": correct.item() / seen,
                "lr": optimizer.param_groups[0]["lr"],
            }
            if not math.isfinite(record["loss"]):
                raise CompressError(
                    f"training diverged (loss {record['loss']} in epoch {epoch}): "
                    "lower the learning rate"
                )
            if val_loader is not None:
                record["val_acc"] = evaluate(model, val_loader, device, quiet=True)
            record["seconds"] = time.perf_counter() - start
            history.append(record)
            summary = f"loss {record['loss']:.4f} acc {record['train_acc']:.3f}" + (
                f" val {record['val_acc']:.3f}" if "val_acc" in record else ""
            )
            if bar.disable:
                logger.info("%s epoch %d/%d: %s (%.1fs)", desc, epoch, epochs, summary,
                            record["seconds"])
            else:
                bar.set_postfix_str(f"ep {epoch}/{epochs} {summary}")
            if checkpoint is not None:
                _save_checkpoint(checkpoint, epoch, history, model, optimizer, scheduler, train_loader)
    finally:
        bar.close()
        model.train(was_training)
    return history

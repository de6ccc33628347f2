"""``asng``: ASNG-NAS (Akimoto et al., ICML 2019) over the widths and blocks of a search space.

What is searched
----------------
One independent categorical distribution per decision of the space (ALGORITHMS.md section 2),
optimised by :class:`~compressor.search.asng.CategoricalASNG` with λ = 2, α = 1.5, δ_init = 1
and Δ_max from ``options["delta_max"]`` (default ∞):

* a channel group chooses among a *candidate subset* of its widths: for every ratio in
  ``options["ratios"]`` (default 0.1, 0.2, …, 1.0) the choice nearest ``ratio · channels``,
  deduplicated and ascending (:func:`candidate_widths`). A handful of candidates per group keeps
  ``N = Σ(K_i − 1)`` small, so the natural-gradient step stays meaningful;
* a removable residual block chooses between drop (index 0) and keep (index 1).

Alternation
-----------
``context.train_data`` is split in halves (:func:`~compressor.data.split_halves` with
``context.seed``). One *step* is:

1. **weight step** on a batch of the first half: sample 2 architectures; the loss is the mean of
   their cross-entropy losses, each computed with :func:`~compressor.surgery.apply_masks` on the
   supernet in train mode (the two backward passes accumulate into the shared weights); the
   gradient norm is clipped to ``grad_clip`` (5); SGD with momentum 0.9 (Nesterov), weight decay
   ``weight_decay`` and a per-step cosine schedule from ``w_lr`` down to 0 over the whole search;
2. **distribution step** on a batch of the second half: sample 2 *new* architectures, compute
   their cross-entropy losses on that batch without gradients, add the budget penalty, and hand
   the pair to :meth:`CategoricalASNG.update`.

An epoch is ``steps_per_epoch`` steps (default: one pass over the first half).

Under torchrun every rank takes its own shard of each half (DistributedSampler): the weight
gradients are averaged by DistributedDataParallel, the distribution step's losses by an
all-reduce, and the samples come from the same seeded sampler on every rank, so every rank
applies the same update to the same θ. ``context.batch_size`` is per rank.

The supernet is a deep copy of ``context.model``; ``context.model`` itself is never modified
(the pipeline materialises the child from it and uses it as the teacher). The trained supernet
weights are discarded.

Batch norm in the distribution step
-----------------------------------
The shared running statistics of the supernet belong to no particular subnet (they mix every
architecture sampled so far), so evaluating a masked subnet with them in eval mode mis-scales its
activations and would rank architectures by how well they happen to match the mixture.
Recomputing the statistics for each sample would cost far more than the evaluation itself.
Instead, the distribution step runs the supernet in **eval mode** (dropout and stochastic depth
off, so the two samples are compared without extra noise) **except that every batch-norm layer
normalises with the statistics of the current batch** and does *not* update its running
statistics (``track_running_stats`` is switched off for the duration; :func:`batch_stat_eval`).
The running statistics are never used anywhere in the search, and after it the supernet is thrown
away. Batches are of ``context.batch_size`` images, so the batch statistics are well defined.

Budget
------
The original ASNG-NAS has no cost term. Here each distribution sample's loss is penalised by how
far its closed-form cost exceeds the budget (:func:`penalized_loss`)::

    f(x) = CE(x) + penalty · max(0, excess(x) − 1),   excess = max over active bounds of cost/bound

(:meth:`~compressor.budget.Budget.excess`; exact MACs/params, microseconds per call). Samples
within budget are ranked by their loss alone. An over-budget sample pays ``penalty`` (default 10)
per unit of relative excess: 10 % over costs 1 nat of cross-entropy, which outweighs the typical
loss gap between two subnets, so it loses to an in-budget sample of similar loss; of two
over-budget samples the one closer to the budget wins unless its loss is much worse. The
ranking-based update only sees which sample is better, so the penalty need not be calibrated
further.

The final architecture is ``argmax θ`` turned into widths and keep flags, then passed to
:func:`~compressor.search.greedy.repair`, which shrinks it greedily if it is still over budget and
then widens groups back (over *all* their choices, not just the candidates) while the budget
holds. The result therefore always meets the budget and sits close under it.

Convergence
-----------
``mean_i max_j θ_ij`` is logged and recorded after every epoch. With ``options["converge"]`` the
search stops as soon as it reaches that threshold. Mind the margin of the update: the statistic
cannot exceed :attr:`CategoricalASNG.convergence_ceiling` (about ``1 − 1/D`` for ``D``
decisions), so thresholds above that are never reached (a warning says so).

Options (``context.options``, e.g. ``--option w_lr=0.05``)
-----------------------------------------------------------
===================  ==========================  ==================================================
key                  default                     meaning
===================  ==========================  ==================================================
``ratios``           [0.1, 0.2, …, 1.0]          width ratios whose nearest choices are candidates
``w_lr``             0.025                       initial SGD learning rate of the weight step
``weight_decay``     5e-4                        SGD weight decay of the weight step
``grad_clip``        5.0                         gradient-norm clip of the weight step
``penalty``          10.0                        budget penalty per unit of relative excess
``delta_max``        inf                         Δ_max of the ASNG step-size adaptation
``converge``         None                        stop when mean_i max_j θ_ij reaches this
``steps_per_epoch``  len(first-half loader)      steps per epoch (a smaller value shortens epochs)
===================  ==========================  ==================================================

The same ``context.seed`` gives the same architecture (torch's generator is forked and seeded
for the search, the ASNG sampler is seeded with it, and the data order follows it) on the same
device and software versions.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..architecture import Architecture
from ..budget import Budget
from ..data import cycle, make_loader, split_halves
from ..distributed import all_mean, wrap
from ..errors import CompressError
from ..resume import restoring, save_state
from ..space import ChannelGroup, SearchSpace, round_width
from ..surgery import apply_masks
from ..train import logits_of, pick_device
from .asng import CategoricalASNG
from .base import SearchContext, SearchResult
from .greedy import block_scores, repair

log = logging.getLogger(__name__)

__all__ = ["asng_search", "batch_stat_eval", "candidate_widths", "penalized_loss", "DEFAULTS"]

DEFAULTS: dict = {
    "ratios": [round(0.1 * i, 1) for i in range(1, 11)],
    "w_lr": 0.025,
    "weight_decay": 5e-4,
    "grad_clip": 5.0,
    "penalty": 10.0,
    "delta_max": math.inf,
    "converge": None,
    "steps_per_epoch": None,
}

_ALPHA = 1.5
_DELTA_INIT = 1.0
_LAMBDA = 2


# ---------------------------------------------------------------------- pieces with plain inputs
def penalized_loss(loss: float, excess: float, penalty: float) -> float:
    """``loss + penalty · max(0, excess − 1)``: the loss ASNG ranks a sample by.

    ``excess`` is :meth:`Budget.excess` (largest cost/bound ratio; <= 1 within budget). A NaN
    loss stays NaN (the ranking treats it as worst).
    """
    return float(loss) + float(penalty) * max(0.0, float(excess) - 1.0)


def candidate_widths(group: ChannelGroup, ratios: Sequence[float]) -> tuple[int, ...]:
    """The choices of ``group`` nearest ``r · channels`` for each ratio, deduplicated, ascending."""
    return tuple(sorted({round_width(group.channels, float(r), group.choices) for r in ratios}))


@contextlib.contextmanager
def batch_stat_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, except that batch norms use the current batch's statistics and update nothing.

    Restores every module's mode and ``track_running_stats`` on exit.
    """
    modes = {m: m.training for m in model.modules()}
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracking = {m: m.track_running_stats for m in norms}
    try:
        model.eval()
        for m in norms:
            m.train()
            # train mode without tracking: normalise by batch statistics, leave the buffers alone
            m.track_running_stats = False
        yield model
    finally:
        for m in norms:
            m.track_running_stats = tracking[m]
        for m, mode in modes.items():
            m.training = mode


class _Encoding:
    """Decisions of the space as categorical variables: indices ↔ architectures."""

    def __init__(self, space: SearchSpace, ratios: Sequence[float]):
        self.space = space
        self.widths = [(g.name, candidate_widths(g, ratios)) for g in space.decision_groups]
        self.blocks = [b.name for b in space.blocks]

    @property
    def categories(self) -> list[int]:
        return [len(c) for _, c in self.widths] + [2] * len(self.blocks)

    def architecture(self, indices: Sequence[int]) -> Architecture:
        idx = [int(i) for i in indices]
        n = len(self.widths)
        widths = {name: cands[i] for (name, cands), i in zip(self.widths, idx[:n])}
        kept = {name: bool(i) for name, i in zip(self.blocks, idx[n:])}
        return self.space.architecture(widths, kept)


# ---------------------------------------------------------------------- options
def _number(options: dict, key: str, positive: bool = True, allow_inf: bool = False) -> float:
    value = options.get(key, DEFAULTS[key])
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise CompressError(f"asng option {key}={value!r} must be a number, e.g. {key}={DEFAULTS[key]}") from None
    ok = (value > 0 if positive else value >= 0) and not math.isnan(value) and (allow_inf or math.isfinite(value))
    if not ok:
        sign = "positive" if positive else "non-negative"
        raise CompressError(f"asng option {key}={value!r} must be a {sign} finite number, e.g. {key}={DEFAULTS[key]}")
    return value


def _options(options: dict) -> dict:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        log.warning("asng ignores the options %s (it knows %s)", ", ".join(unknown), ", ".join(DEFAULTS))
    ratios = options.get("ratios", DEFAULTS["ratios"])
    if isinstance(ratios, (int, float)) and not isinstance(ratios, bool):
        ratios = [ratios]
    try:
        ratios = [float(r) for r in ratios]
    except (TypeError, ValueError):
        raise CompressError(f"asng option ratios={ratios!r} must be a list of numbers in (0, 1], "
                            "e.g. ratios=[0.25,0.5,0.75,1.0]") from None
    if not ratios or not all(0.0 < r <= 1.0 for r in ratios):
        raise CompressError(f"asng option ratios={ratios!r} must be a non-empty list of numbers in (0, 1], "
                            "e.g. ratios=[0.25,0.5,0.75,1.0]")
    out = {
        "ratios": ratios,
        "w_lr": _number(options, "w_lr"),
        "weight_decay": _number(options, "weight_decay", positive=False),
        "grad_clip": _number(options, "grad_clip"),
        "penalty": _number(options, "penalty", positive=False),
        "delta_max": _number(options, "delta_max", allow_inf=True),
        "converge": None,
        "steps_per_epoch": None,
    }
    if options.get("converge") is not None:
        converge = _number(options, "converge")
        if converge > 1.0:
            raise CompressError(f"asng option converge={converge} must lie in (0, 1], e.g. converge=0.9")
        out["converge"] = converge
    steps = options.get("steps_per_epoch")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise CompressError(f"asng option steps_per_epoch={steps!r} must be a positive integer, e.g. 100")
        out["steps_per_epoch"] = steps
    return out


def _save(path, epoch, history, supernet, optimizer, scheduler, asng) -> None:
    """The search state after ``epoch``, written atomically: enough to continue it exactly."""
    state = {"epoch": epoch, "history": history, "supernet": supernet.state_dict(), "asng": asng.state_dict(),
             "optimizer": optimizer.state_dict() if optimizer else None,
             "scheduler": scheduler.state_dict() if scheduler else None, "torch_rng": torch.get_rng_state()}
    save_state(path, state)


def _restore(path, supernet, optimizer, scheduler, asng) -> tuple[int, list]:
    """Load a search state saved by :func:`_save`; return the next epoch and the history so far."""
    with restoring(path, "the asng search") as state:
        supernet.load_state_dict(state["supernet"])
        asng.load_state_dict(state["asng"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        return int(state["epoch"]) + 1, list(state["history"])


def _costs(space: SearchSpace, arch: Architecture) -> dict:
    return {"macs": space.macs(arch), "params": space.params(arch)}


# ---------------------------------------------------------------------- the searcher
def asng_search(space: SearchSpace, budget: Budget, context: SearchContext | None = None) -> SearchResult:
    """ASNG-NAS over widths and blocks, with a budget penalty and a final greedy repair.

    Trains a weight-sharing copy of ``context.model`` on ``context.train_data`` for
    ``context.epochs`` epochs (see the module docstring); ``context.model`` is left unchanged.
    Returns the repaired ``argmax θ`` and one history record per epoch: ``epoch``, ``steps``,
    ``weight_loss`` (mean CE of the weight steps), ``arch_loss`` and ``penalized_loss`` (means over
    the distribution samples), ``over_budget`` (share of them over budget), ``updates`` (ASNG
    updates applied; ties are skipped), ``convergence``, ``step_size`` (δ = 1/Δ), ``Delta``,
    ``lr``, ``argmax`` (MACs and params of argmax θ before repair), ``argmax_excess``,
    ``converged`` and ``seconds``.
    """
    context = context if context is not None else SearchContext()
    if context.model is None or context.train_data is None:
        raise CompressError("the asng search trains a supernet: it needs the model and training data")
    if isinstance(context.epochs, bool) or not isinstance(context.epochs, int) or context.epochs < 1:
        raise CompressError(f"search epochs {context.epochs!r} must be a positive integer for asng, e.g. 5")
    opts = _options(dict(context.options or {}))
    full = space.full()
    if budget.fits(space, full):
        return SearchResult(full, [{"epoch": 0, "note": "the full model meets the budget", **_costs(space, full)}])
    budget.check_reachable(space)
    encoding = _Encoding(space, opts["ratios"])
    if not encoding.categories:
        log.warning("asng: the space has no decisions; repairing the full model")
        return repair(space, budget, full)

    half_w, half_a = split_halves(context.train_data, context.seed)
    if min(len(half_w), len(half_a)) < 2:
        raise CompressError(f"asng needs at least 4 training images (got {len(context.train_data)}): "
                            "provide more training data")
    device = pick_device(context.device)
    forked = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(context.seed)
        history, theta_arch = _search(space, budget, context, opts, encoding, half_w, half_a, device)

    scores = _block_scores(space, context)
    result = repair(space, budget, theta_arch, scores)
    log.info("asng: argmax θ %s, after repair %s (%d repair moves)", _costs(space, theta_arch),
             _costs(space, result.architecture), len(result.history))
    return SearchResult(result.architecture, history)


def _block_scores(space: SearchSpace, context: SearchContext) -> dict:
    was_training = context.model.training
    try:
        return block_scores(space, context)
    finally:
        context.model.train(was_training)


def _search(space, budget, context, opts, encoding, half_w, half_a, device):
    supernet = copy.deepcopy(context.model).to(device)
    params = [p for p in supernet.parameters() if p.requires_grad]
    # under torchrun every rank takes its own shard of each half; gradients and losses are averaged
    loader_w = make_loader(half_w, context.batch_size, shuffle=True, seed=context.seed, shard=True)
    loader_a = make_loader(half_a, context.batch_size, shuffle=True, seed=context.seed + 1, shard=True)
    steps = opts["steps_per_epoch"] or len(loader_w)
    total = steps * context.epochs
    optimizer = scheduler = None
    if params:
        optimizer = torch.optim.SGD(params, lr=opts["w_lr"], momentum=0.9, nesterov=True,
                                    weight_decay=opts["weight_decay"])
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    else:
        log.warning("asng: the model has no trainable parameters; only the distribution is updated")

    asng = CategoricalASNG(encoding.categories, alpha=_ALPHA, delta_init=_DELTA_INIT,
                           delta_max=opts["delta_max"], rng=np.random.default_rng(context.seed))
    if opts["converge"] is not None and opts["converge"] > asng.convergence_ceiling:
        log.warning("asng: converge=%.4g is above the largest value the convergence statistic can reach "
                    "(%.4f with %d decisions); the search runs all %d epochs",
                    opts["converge"], asng.convergence_ceiling, asng.D, context.epochs)
    log.info("asng: %d decisions (N=%d), %d epochs of %d steps, batch %d, on %s", asng.num_decisions, asng.N,
             context.epochs, steps, context.batch_size, device)

    history: list[dict] = []
    first = 1
    if context.checkpoint is not None and context.checkpoint.is_file():
        first, history = _restore(context.checkpoint, supernet, optimizer, scheduler, asng)
        log.info("asng: resuming after epoch %d from %s", first - 1, context.checkpoint)
    done_steps = steps * (first - 1)  # a resumed search replays the data order up to where it stopped
    batches_w, batches_a = cycle(loader_w, skip=done_steps), cycle(loader_a, skip=done_steps)
    bar = tqdm(total=total, initial=steps * (first - 1), desc="asng", unit="step",
               disable=True if context.quiet else None, dynamic_ncols=True)
    converged = False
    ddp = wrap(supernet, device, find_unused=True)  # a dropped block's weights take no part in a pass
    try:
        for epoch in range(first, context.epochs + 1):
            start = time.perf_counter()
            sums = {"weight_loss": 0.0, "arch_loss": 0.0, "penalized_loss": 0.0, "over_budget": 0.0}
            done = updates = 0
            lr = optimizer.param_groups[0]["lr"] if optimizer else 0.0
            for _ in range(steps):
                x, y = next(batches_w)
                if optimizer is not None:
                    lr = optimizer.param_groups[0]["lr"]
                    sums["weight_loss"] += _weight_step(space, supernet, ddp, encoding, asng.sample(_LAMBDA), x,
                                                        y, device, optimizer, params, opts["grad_clip"], epoch)
                    scheduler.step()
                x, y = next(batches_a)
                samples = asng.sample(_LAMBDA)
                losses, penalized, over = _evaluate(space, budget, supernet, encoding, samples, x, y, device,
                                                    opts["penalty"])
                updates += asng.update(samples, penalized)
                sums["arch_loss"] += float(np.mean(losses))
                sums["penalized_loss"] += float(np.mean(penalized))
                sums["over_budget"] += over
                done += 1
                bar.update()
                if opts["converge"] is not None and asng.has_converged(opts["converge"]):
                    converged = True
                    break
            theta_arch = encoding.architecture(asng.argmax())
            record = {
                "epoch": epoch,
                "steps": done,
                **{k: v / done for k, v in sums.items()},
                "updates": updates,
                "convergence": asng.convergence(),
                "step_size": asng.step_size,
                "Delta": asng.Delta,
                "lr": lr,
                "argmax": _costs(space, theta_arch),
                "argmax_excess": budget.excess(space, theta_arch),
                "converged": converged,
                "seconds": time.perf_counter() - start,
            }
            if optimizer is None:
                record["weight_loss"] = None
            history.append(record)
            if context.checkpoint is not None:  # before the epoch is reported as done
                _save(context.checkpoint, epoch, history, supernet, optimizer, scheduler, asng)
            summary = (f"conv {record['convergence']:.4f} step {record['step_size']:.3g} "
                       f"excess {record['argmax_excess']:.3f}")
            bar.set_postfix_str(f"ep {epoch}/{context.epochs} {summary}")
            log.info("asng epoch %d/%d: convergence %.4f (ceiling %.4f), step size %.4g, weight loss %s, "
                     "arch loss %.4f, %d/%d updates, argmax θ at %.3f of the budget (%.1fs)",
                     epoch, context.epochs, record["convergence"], asng.convergence_ceiling, record["step_size"],
                     "n/a" if record["weight_loss"] is None else f"{record['weight_loss']:.4f}",
                     record["arch_loss"], updates, done, record["argmax_excess"], record["seconds"])
            if converged:
                log.info("asng: convergence %.4f reached the threshold %.4g after epoch %d; stopping",
                         record["convergence"], opts["converge"], epoch)
                break
    finally:
        bar.close()
    log.debug("asng: final θ %s", [row.round(3).tolist() for row in asng.theta_list()])
    return history, encoding.architecture(asng.argmax())


def _weight_step(space, supernet, ddp, encoding, samples, x, y, device, optimizer, params, clip, epoch) -> float:
    """Mean CE of the samples on one batch, backpropagated into the shared weights; one SGD step.

    ``ddp`` is the supernet as the forward passes call it (in DistributedDataParallel under torchrun,
    which averages the gradients over the ranks; the masks hook into ``supernet``'s modules).
    """
    supernet.train()
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for k, indices in enumerate(samples):
        # under DDP the gradients of all samples are summed locally and averaged over the ranks once
        accumulate = ddp.no_sync() if k < len(samples) - 1 and hasattr(ddp, "no_sync") else contextlib.nullcontext()
        with accumulate, apply_masks(space, supernet, encoding.architecture(indices)):
            loss = F.cross_entropy(logits_of(ddp(x)), y)
            (loss / len(samples)).backward()
        total += loss.detach()
    mean = float(all_mean(total / len(samples)))
    if not math.isfinite(mean):
        raise CompressError(f"the asng supernet training diverged (loss {mean} in epoch {epoch}): "
                            "lower the learning rate, e.g. --option w_lr=0.01")
    torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    return mean


@torch.no_grad()
def _evaluate(space, budget, supernet, encoding, samples, x, y, device, penalty):
    """CE of each sample on one batch (batch-norm statistics from the batch; under torchrun the
    mean over the ranks' shards), and penalised losses."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    local = []
    with batch_stat_eval(supernet):
        for indices in samples:
            with apply_masks(space, supernet, encoding.architecture(indices)):
                local.append(F.cross_entropy(logits_of(supernet(x)), y))
    losses, penalized, over = [], [], 0
    for indices, loss in zip(samples, all_mean(torch.stack(local)).tolist()):
        arch = encoding.architecture(indices)
        excess = budget.excess(space, arch)
        over += excess > 1.0
        losses.append(loss)
        penalized.append(penalized_loss(loss, excess, penalty))
    return losses, penalized, over / len(samples)

"""``asng``: ASNG-NAS (Akimoto et al., ICML 2019) over the widths and blocks of a search space.

What is searched
----------------
One independent categorical distribution per decision of the space (docs/ALGORITHMS.md, section asng),
optimised by :class:`~compressor.search.asng.CategoricalASNG` with λ = 2, α = 1.5, δ_init = 1
and Δ_max from ``options["delta_max"]`` (default ∞):

* a channel group chooses among a *candidate subset* of its widths: for every ratio in
  ``options["ratios"]`` (default 0.1, 0.2, …, 1.0) the choice nearest ``ratio · channels``,
  deduplicated and ascending (the space's :meth:`~compressor.space.SearchSpace.width_table`).
  A handful of candidates per group keeps
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
:func:`~compressor.search.greedy.refine`, which shrinks it if it is still over budget and then
widens groups back (over *all* their choices, not just the candidates) while the budget holds,
every move judged by the distillation loss it measures on held-out images (by weight norms with
``refine_images=0``). The result therefore always meets the budget and sits close under it.

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
``refine_images``    256                         held-out images judging the final moves; 0: norms
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
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compress_base.errors import CompressError

from ..architecture import Architecture
from ..data import cycle, make_loader, split_halves
from ..distributed import all_mean, wrap
from ..space import SearchSpace
from ..surgery import apply_masks
from ..train import logits_of
from .asng import CategoricalASNG
from .base import SearchContext, SearchResult
from .greedy import GreedyOptions, refine, repair
from .loop import EpochSearcher
from .options import SearchOptions, option
from .registry import register, search

log = logging.getLogger(__name__)

__all__ = ["ASNGOptions", "ASNGSearcher", "asng_search", "batch_stat_eval", "penalized_loss"]

_ALPHA = 1.5
_DELTA_INIT = 1.0
_LAMBDA = 2


@dataclass(frozen=True)
class ASNGOptions(SearchOptions):
    """Settings of ``--method asng`` (the table in the module docstring)."""

    method = "asng"
    ratios: tuple[float, ...] = option(tuple(round(0.1 * i, 1) for i in range(1, 11)), low=0.0, low_open=True,
                                       high=1.0)
    w_lr: float = option(0.025, low=0.0, low_open=True)
    weight_decay: float = option(5e-4, low=0.0)
    grad_clip: float = option(5.0, low=0.0, low_open=True)
    penalty: float = option(10.0, low=0.0)
    delta_max: float = option(math.inf, low=0.0, low_open=True, finite=False)
    converge: float | None = option(None, low=0.0, low_open=True, high=1.0)
    steps_per_epoch: int | None = option(None, low=1)
    refine_images: int = option(256, low=0)


# ---------------------------------------------------------------------- pieces with plain inputs
def penalized_loss(loss: float, excess: float, penalty: float) -> float:
    """``loss + penalty · max(0, excess − 1)``: the loss ASNG ranks a sample by.

    ``excess`` is :meth:`Budget.excess` (largest cost/bound ratio; <= 1 within budget). A NaN
    loss stays NaN (the ranking treats it as worst).
    """
    return float(loss) + float(penalty) * max(0.0, float(excess) - 1.0)


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
        self.widths = list(space.width_table(ratios).items())
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


# ---------------------------------------------------------------------- the searcher
def _costs(space: SearchSpace, arch: Architecture) -> dict:
    return {"macs": space.macs(arch), "params": space.params(arch)}


@register("asng")
class ASNGSearcher(EpochSearcher):
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

    Options = ASNGOptions
    lower = "the learning rate, e.g. --option w_lr=0.01"

    def prepare(self) -> SearchResult | None:
        space, budget, ctx = self.space, self.budget, self.context
        if ctx.model is None or ctx.train_data is None:
            raise CompressError("the asng search trains a supernet: it needs the model and training data")
        if isinstance(ctx.epochs, bool) or not isinstance(ctx.epochs, int) or ctx.epochs < 1:
            raise CompressError(f"search epochs {ctx.epochs!r} must be a positive integer for asng, e.g. 5")
        full = space.full()
        if budget.fits(space, full):
            return SearchResult(full, [{"epoch": 0, "note": "the full model meets the budget", **_costs(space, full)}])
        budget.check_reachable(space)
        self.encoding = _Encoding(space, self.options.ratios)
        if not self.encoding.categories:
            log.warning("asng: the space has no decisions; repairing the full model")
            return repair(space, budget, full)
        self.halves = split_halves(ctx.train_data, ctx.seed)
        if min(len(h) for h in self.halves) < 2:
            raise CompressError(f"asng needs at least 4 training images (got {len(ctx.train_data)}): "
                                "provide more training data")
        return None

    def setup(self) -> None:
        ctx, opts = self.context, self.options
        self.supernet = copy.deepcopy(ctx.model).to(self.device)
        self.params = [p for p in self.supernet.parameters() if p.requires_grad]
        # under torchrun every rank takes its own shard of each half; gradients and losses are averaged
        self.loader_w = make_loader(self.halves[0], ctx.batch_size, shuffle=True, seed=ctx.seed, shard=True)
        self.loader_a = make_loader(self.halves[1], ctx.batch_size, shuffle=True, seed=ctx.seed + 1, shard=True)
        self.steps = opts.steps_per_epoch or len(self.loader_w)
        self.optimizer = self.scheduler = None
        if self.params:
            self.optimizer = torch.optim.SGD(self.params, lr=opts.w_lr, momentum=0.9, nesterov=True,
                                             weight_decay=opts.weight_decay)
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.bar_total())
        else:
            log.warning("asng: the model has no trainable parameters; only the distribution is updated")
        self.asng = asng = CategoricalASNG(self.encoding.categories, alpha=_ALPHA, delta_init=_DELTA_INIT,
                                           delta_max=opts.delta_max, rng=np.random.default_rng(ctx.seed))
        if opts.converge is not None and opts.converge > asng.convergence_ceiling:
            log.warning("asng: converge=%.4g is above the largest value the convergence statistic can reach "
                        "(%.4f with %d decisions); the search runs all %d epochs",
                        opts.converge, asng.convergence_ceiling, asng.D, ctx.epochs)
        log.info("asng: %d decisions (N=%d), %d epochs of %d steps, batch %d, on %s", asng.num_decisions, asng.N,
                 ctx.epochs, self.steps, ctx.batch_size, self.device)

    def begin(self, done: int) -> None:
        skip = self.steps * done  # a resumed search replays the data order up to where it stopped
        self.batches_w, self.batches_a = cycle(self.loader_w, skip=skip), cycle(self.loader_a, skip=skip)
        self.ddp = wrap(self.supernet, self.device, find_unused=True)  # a dropped block takes no part in a pass

    def done(self, index: int, history: list[dict]) -> bool:
        return index > self.context.epochs or bool(history and history[-1]["converged"])

    def step(self, index: int) -> dict:
        start = time.perf_counter()
        sums = {"weight_loss": 0.0, "arch_loss": 0.0, "penalized_loss": 0.0, "over_budget": 0.0}
        done = updates = 0
        asng, optimizer, converge = self.asng, self.optimizer, self.options.converge
        lr = optimizer.param_groups[0]["lr"] if optimizer else 0.0
        converged = False
        for _ in range(self.steps):
            x, y = next(self.batches_w)
            if optimizer is not None:
                lr = optimizer.param_groups[0]["lr"]
                sums["weight_loss"] += self._weight_step(asng.sample(_LAMBDA), x, y, index)
                self.scheduler.step()
            x, y = next(self.batches_a)
            samples = asng.sample(_LAMBDA)
            losses, penalized, over = _evaluate(self.space, self.budget, self.supernet, self.encoding, samples, x, y,
                                                self.device, self.options.penalty)
            updates += asng.update(samples, penalized)
            sums["arch_loss"] += float(np.mean(losses))
            sums["penalized_loss"] += float(np.mean(penalized))
            sums["over_budget"] += over
            done += 1
            self.bar.update()
            if converge is not None and asng.has_converged(converge):
                converged = True
                break
        theta_arch = self.encoding.architecture(asng.argmax())
        record = {"epoch": index, "steps": done, **{k: v / done for k, v in sums.items()}, "updates": updates,
                  "convergence": asng.convergence(), "step_size": asng.step_size, "Delta": asng.Delta, "lr": lr,
                  "argmax": _costs(self.space, theta_arch), "argmax_excess": self.budget.excess(self.space, theta_arch),
                  "converged": converged, "seconds": time.perf_counter() - start}
        if optimizer is None:
            record["weight_loss"] = None
        self.bar.set_postfix_str(f"ep {index}/{self.context.epochs} conv {record['convergence']:.4f} "
                                 f"step {record['step_size']:.3g} excess {record['argmax_excess']:.3f}")
        return record

    def summary(self, r: dict) -> str:
        weight = "n/a" if r["weight_loss"] is None else f"{r['weight_loss']:.4f}"
        return (f"convergence {r['convergence']:.4f} (ceiling {self.asng.convergence_ceiling:.4f}), step size "
                f"{r['step_size']:.4g}, weight loss {weight}, arch loss {r['arch_loss']:.4f}, {r['updates']}/"
                f"{r['steps']} updates, argmax θ at {r['argmax_excess']:.3f} of the budget ({r['seconds']:.1f}s)")

    def _weight_step(self, samples, x, y, epoch: int) -> float:
        """Mean CE of the samples on one batch, backpropagated into the shared weights; one SGD step.

        The forward passes call ``self.ddp`` (the supernet in DistributedDataParallel under torchrun,
        which averages the gradients over the ranks; the masks hook into the supernet's modules).
        """
        self.supernet.train()
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for k, indices in enumerate(samples):
            # under DDP the gradients of all samples are summed locally and averaged over the ranks once
            last = k == len(samples) - 1
            accumulate = self.ddp.no_sync() if not last and hasattr(self.ddp, "no_sync") else contextlib.nullcontext()
            with accumulate, apply_masks(self.space, self.supernet, self.encoding.architecture(indices)):
                loss = F.cross_entropy(logits_of(self.ddp(x)), y)
                (loss / len(samples)).backward()
            total += loss.detach()
        mean = float(all_mean(total / len(samples)))
        self.check_finite([mean], f"in epoch {epoch}")
        torch.nn.utils.clip_grad_norm_(self.params, self.options.grad_clip)
        self.optimizer.step()
        return mean

    def state_dict(self) -> dict:
        return {"supernet": self.supernet.state_dict(), "asng": self.asng.state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "scheduler": self.scheduler.state_dict() if self.scheduler else None}

    def load_state_dict(self, state: dict) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.asng.load_state_dict(state["asng"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])

    def finish(self, history: list[dict]) -> SearchResult:
        space, ctx = self.space, self.context
        if history and history[-1]["converged"]:
            log.info("asng: convergence %.4f reached the threshold %.4g after epoch %d; stopping",
                     history[-1]["convergence"], self.options.converge, history[-1]["epoch"])
        log.debug("asng: final θ %s", [row.round(3).tolist() for row in self.asng.theta_list()])
        theta_arch = self.encoding.architecture(self.asng.argmax())
        result = refine(space, self.budget, theta_arch, ctx, GreedyOptions(images=self.options.refine_images))
        log.info("asng: argmax θ %s, refined to %s (%d moves)", _costs(space, theta_arch),
                 _costs(space, result.architecture), len(result.history))
        return SearchResult(result.architecture, history)


def asng_search(space, budget, context: SearchContext | None = None) -> SearchResult:
    """``--method asng`` (:class:`ASNGSearcher`)."""
    return search("asng", space, budget, context)


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

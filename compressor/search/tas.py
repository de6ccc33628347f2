"""``tas``: Transformable Architecture Search (Dong & Yang, NeurIPS 2019), on any search space.

Re-implementation of docs/ALGORITHMS.md (section tas) on the full network of a :class:`SearchSpace`, with
forward hooks (the way :func:`compressor.surgery.apply_masks` applies an architecture):

Width
    Every decision group gets logits α over its candidate widths: the group's choices nearest the
    ratios 0.3, 0.4, ..., 1.0 of its channels (deduplicated; the full width is always one). A width
    keeps a prefix of the group's channels in importance-ranking order. Each forward pass uses two
    widths drawn by :func:`~.tas_ops.gumbel_top2` and mixes them with channel-wise interpolation
    (:func:`~.tas_ops.cwi`, :func:`~.tas_ops.mix_channels`) at every layer that *ends a chain* of
    the group's out-role layers (:func:`~.tas_ops.terminal_layers`): after a norm that follows a convolution, or at a
    convolution/linear layer no norm of the group follows. Channels beyond the wider of the two
    widths come out as zeros, so every consumer sees the narrower network. The mixing is linear,
    so mixing each branch of a residual sum mixes the sum.
Depth
    Consecutive removable residual blocks that run one after the other under the same parent form
    a stage (:func:`~.tas_ops.depth_stages`); its candidate depths are 0..n (how many of its removable
    blocks are kept, from the first), with logits β. All blocks run; the output of the stage's
    last removable block is replaced by ``Σ_d g_d · out_d`` with full Gumbel-softmax weights
    ``g``, where ``out_0`` is the stage's input and ``out_d`` the output of its d-th block, passed
    through what the dropped blocks after it leave behind (their trailing activations), exactly
    as a dropped block computes in :mod:`compressor.surgery`.
Cost
    Expected cost under plain softmax(α), and a block kept with the probability that the stage's
    depth reaches it (reverse cumulative sum of softmax(β)); see :meth:`~compressor.costs.Metric.expectation`. The
    cost loss is the released code's asymmetric gate (:func:`cost_loss`), on the budget's binding
    metric (MACs, params and latency alike); architecture loss = CE + ``cost_weight`` · cost loss.
Schedule
    The training data is split in halves; every step trains the weights on a batch of the first
    half (SGD, Nesterov, cosine) and α, β on a batch of the second (Adam). τ follows a cosine from
    ``tau_max`` to ``tau_min`` over all steps of the search.
Result
    argmax α, β, then :func:`compressor.search.greedy.refine`: shrunk if over the budget and widened
    while it holds, every move judged by measured loss on held-out images (``fill=false`` keeps an
    argmax that fits as it is, the paper's result; ``refine_images=0`` judges by weight norms).
Under torchrun
    Every rank trains on its own shard of each half (DistributedSampler); the weight gradients are
    averaged by DistributedDataParallel and those of α and β by an all-reduce, and the Gumbel
    noise comes from the same seeded generator on every rank, so all ranks hold the same α, β
    and weights. ``context.batch_size`` is per rank: two ranks at batch ``b`` take the steps one
    process takes at ``2b`` (exactly so for a network without batch norm).

Differences from the official code: one batch norm is shared by all widths (the official code
has one per width candidate); the cost loss uses ``log(E[cost] / full cost)`` (same gradient as
``log E[cost]``); τ is updated every step instead of every epoch, so that short searches anneal.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compress_base.errors import CompressError

from ..architecture import Architecture
from ..data import cycle, make_loader, split_halves
from ..distributed import all_mean, average_gradients, wrap
from ..train import logits_of
from .base import SearchContext, SearchResult
from .greedy import GreedyOptions, refine
from .loop import EpochSearcher
from .options import SearchOptions, option
from .registry import register, search
from .tas_supernet import DEFAULT_RATIOS, TASSupernet

log = logging.getLogger(__name__)

__all__ = ["TASOptions", "TASSearcher", "cost_loss", "tas_search", "tau_schedule"]


@dataclass(frozen=True)
class TASOptions(SearchOptions):
    """Settings of ``--method tas`` (``--option key=value``); defaults follow the official code."""

    method = "tas"
    # width candidates, as fractions of each group's channels
    ratios: tuple[float, ...] = option(DEFAULT_RATIOS, low=0.0, low_open=True, high=1.0)
    tolerance: float = option(0.05, low=0.0)  # t: no cost loss while the argmax cost is in [R - t*C_full, R]
    cost_weight: float = option(2.0, low=0.0)  # architecture loss = CE + cost_weight * cost loss
    w_lr: float = option(0.1, low=0.0, low_open=True)  # weights: SGD learning rate (cosine to 0 over the search)
    w_momentum: float = option(0.9, low=0.0, high=1.0, high_open=True)  # weights: Nesterov momentum
    w_wd: float = option(5e-4, low=0.0)  # weights: weight decay
    a_lr: float = option(1e-3, low=0.0, low_open=True)  # architecture logits: Adam learning rate
    a_betas: tuple[float, ...] = option((0.5, 0.999), low=0.0, high=1.0, high_open=True, length=2)  # Adam betas
    a_wd: float = option(1e-3, low=0.0)  # architecture logits: Adam weight decay
    tau_max: float = option(5.0, low=0.0, low_open=True)  # Gumbel temperature at the first step
    tau_min: float = option(0.1, low=0.0, low_open=True)  # Gumbel temperature at the last step
    steps_per_epoch: int | None = option(None, low=1)  # cap on steps per epoch (default: one pass over a half)
    init_std: float = option(0.01, low=0.0)  # logits start as N(0, init_std^2)
    fill: bool = True  # widen an argmax that fits while the budget holds (false: the paper's argmax as it is)
    refine_images: int = option(256, low=0)  # held-out images judging the final shrink/widen moves; 0: norms

    def check(self):
        if self.tau_min > self.tau_max:
            return "tau_min", f"must not exceed tau_max={self.tau_max}"
        return None


def cost_loss(expected: torch.Tensor, current: float, target: float, full: float,
              tolerance: float = 0.05) -> torch.Tensor:
    """The released code's cost loss, gated on the cost ``current`` of the argmax architecture.

    ``current < target - tolerance*full``: ``-log(expected/full)`` (grow); ``current > target``:
    ``+log(expected/full)`` (shrink); otherwise 0. (Dividing by ``full`` shifts the value, not
    the gradient, of the official ``±log E[cost]``.)
    """
    if current < target - tolerance * full:
        return -torch.log(expected / full)
    if current > target:
        return torch.log(expected / full)
    return torch.zeros((), dtype=expected.dtype, device=expected.device)


def tau_schedule(step: int, total: int, tau_max: float = 5.0, tau_min: float = 0.1) -> float:
    """Cosine from ``tau_max`` (step 0) to ``tau_min`` (step ``total - 1``)."""
    if total <= 1:
        return float(tau_max)
    return tau_min + (tau_max - tau_min) * (1.0 + math.cos(math.pi * step / (total - 1))) / 2.0


# ---------------------------------------------------------------------- the search
@register("tas")
class TASSearcher(EpochSearcher):
    """TAS on a deep copy of ``context.model``; the argmax architecture, within the budget."""

    Options = TASOptions
    lower = "w_lr or a_lr"

    def prepare(self) -> SearchResult | None:
        space, budget, ctx = self.space, self.budget, self.context
        full = space.full()
        if budget.fits(space, full):
            return SearchResult(full, [{"note": "the full model meets the budget", **budget.costs(space, full)}])
        if ctx.model is None or ctx.train_data is None:
            raise CompressError("tas trains while it searches: it needs the model and training data")
        return None

    def setup(self) -> None:
        space, budget, ctx, opts = self.space, self.budget, self.context, self.options
        self.gen = torch.Generator().manual_seed(ctx.seed)
        self.model = copy.deepcopy(ctx.model).to(self.device)
        self.net = TASSupernet(space, self.model, opts.ratios, opts.init_std, self.gen)
        for metric in budget.metrics(space).values():
            self.net.use_metric(metric)
        self.weights = [p for p in self.model.parameters() if p.requires_grad]
        first, second = split_halves(ctx.train_data, ctx.seed)
        # under torchrun every rank takes its own shard of each half and the gradients are averaged
        self.w_loader = make_loader(first, ctx.batch_size, shuffle=True, seed=ctx.seed, shard=True)
        self.a_loader = make_loader(second, ctx.batch_size, shuffle=True, seed=ctx.seed + 1, shard=True)
        steps = min(len(self.w_loader), len(self.a_loader))
        self.steps = steps if opts.steps_per_epoch is None else min(steps, opts.steps_per_epoch)
        if self.steps == 0 or ctx.epochs < 1:
            raise CompressError("tas needs at least one epoch and one batch per half of the training data")
        total = self.steps * ctx.epochs
        self.w_opt = torch.optim.SGD(self.weights, lr=opts.w_lr, momentum=opts.w_momentum,
                                     nesterov=opts.w_momentum > 0, weight_decay=opts.w_wd)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, T_max=total)
        self.a_opt = torch.optim.Adam([self.net.alpha, self.net.beta], lr=opts.a_lr, betas=opts.a_betas,
                                      weight_decay=opts.a_wd)
        self.bounds = budget.bounds()
        self.full = budget.costs(space, space.full())
        net = self.net
        sizes = [len(c) for c in net.candidates] or [0]
        log.info("tas: %d width decisions (%d-%d candidates each), %d depth stages of %s blocks, %d steps",
                 len(net.slot_groups), min(sizes), max(sizes), len(net.stages), [len(s) for s in net.stages], total)

    def begin(self, done: int) -> None:
        self.step_count = self.steps * done  # a resumed search replays the data order up to where it stopped
        self.w_iter = cycle(self.w_loader, skip=self.step_count)
        self.a_iter = cycle(self.a_loader, skip=self.step_count)
        self.ddp = wrap(self.model, self.device)  # the weight steps; the architecture steps call the model itself
        self.model.train()

    def done(self, index: int, history: list[dict]) -> bool:
        return index > self.context.epochs

    def step(self, index: int) -> dict:
        start = time.perf_counter()
        sums = {"weight_ce": 0.0, "ce": 0.0, "cost_loss": 0.0}
        total = self.steps * self.context.epochs
        for _ in range(self.steps):
            tau = tau_schedule(self.step_count, total, self.options.tau_max, self.options.tau_min)
            loss = self._weight_step(tau)
            ce, closs, metric, current = self._arch_step(tau)
            values = tuple(all_mean(torch.stack([loss.detach(), ce.detach(), closs.detach().to(ce)])).tolist())
            self.check_finite(values, f"at step {self.step_count + 1}")
            for key, v in zip(sums, values):
                sums[key] += v
            self.step_count += 1
            self.bar.update()
            if not self.bar.disable:
                ratio = current[metric] / self.bounds[metric]
                self.bar.set_postfix_str(f"tau {tau:.2f} ce {values[1]:.3f} {metric} {ratio:.2f}x budget")
        with torch.no_grad():
            current = self.net.argmax_costs()
            record = {"epoch": index, "tau": tau, **{k: v / self.steps for k, v in sums.items()}}
            for k in self.bounds:
                record[f"argmax_{k}"] = current[k]
                record[f"expected_{k}"] = float(self.net.expected_cost(k))
            record["seconds"] = time.perf_counter() - start
        return record

    def _batch(self, batches):
        x, y = next(batches)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _weight_step(self, tau: float) -> torch.Tensor:
        """The weights, on the first half, with a sampled mixture (no gradient to α, β)."""
        x, y = self._batch(self.w_iter)
        self.net.sample(tau, self.gen, grad=False)
        loss = F.cross_entropy(logits_of(self.ddp(x)), y)
        self.w_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.w_opt.step()
        self.sched.step()
        return loss

    def _arch_step(self, tau: float):
        """α and β, on the second half: CE + cost_weight · cost loss on the binding metric."""
        x, y = self._batch(self.a_iter)
        net, bounds = self.net, self.bounds
        for p in self.weights:
            p.requires_grad_(False)
        try:
            net.sample(tau, self.gen, grad=True)
            ce = F.cross_entropy(logits_of(self.model(x)), y)
            current = net.argmax_costs()
            metric = max(bounds, key=lambda k: current[k] / bounds[k])
            closs = cost_loss(net.expected_cost(metric), current[metric], bounds[metric], self.full[metric],
                              self.options.tolerance)
            self.a_opt.zero_grad(set_to_none=True)
            (ce + self.options.cost_weight * closs).backward()
            average_gradients([net.alpha, net.beta])  # every rank takes the same step
            self.a_opt.step()
        finally:
            for p in self.weights:
                p.requires_grad_(True)
        return ce, closs, metric, current

    def summary(self, record: dict) -> str:
        shown = " ".join(f"{k} {record[k]:.4g}" for k in record if k not in ("epoch", "seconds"))
        return f"{shown} ({record['seconds']:.1f}s)"

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "alpha": self.net.alpha.detach().cpu(),
                "beta": self.net.beta.detach().cpu(), "gen": self.gen.get_state(), "w_opt": self.w_opt.state_dict(),
                "a_opt": self.a_opt.state_dict(), "sched": self.sched.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.net.alpha.copy_(state["alpha"])
        self.net.beta.copy_(state["beta"])
        for key in ("w_opt", "a_opt", "sched"):
            getattr(self, key).load_state_dict(state[key])
        self.gen.set_state(state["gen"])

    def close(self) -> None:
        if getattr(self, "net", None) is not None:
            self.net.remove()

    def finish(self, history: list[dict]) -> SearchResult:
        space, budget, ctx = self.space, self.budget, self.context
        arch = self.net.architecture()
        found = budget.costs(space, arch)
        record = {"result": "argmax", **{f"argmax_{k}": v for k, v in found.items()}, "fits": budget.fits(space, arch)}
        if not record["fits"] or self.options.fill:
            repaired = refine(space, budget, arch, ctx, GreedyOptions(images=self.options.refine_images)).architecture
            record["repaired"] = repaired != arch
            record["repair_moves"] = _moves(arch, repaired)
            arch = repaired
        else:
            record["repaired"] = False
            record["repair_moves"] = 0
        record.update({f"final_{k}": v for k, v in budget.costs(space, arch).items()})
        history.append(record)
        log.info("tas: argmax %s%s", found, f", repaired to {budget.costs(space, arch)}" if record["repaired"] else "")
        return SearchResult(arch, history)


def _moves(a: Architecture, b: Architecture) -> int:
    return sum(a.widths[k] != b.widths[k] for k in a.widths) + sum(a.blocks[k] != b.blocks[k] for k in a.blocks)


def tas_search(space, budget, context: SearchContext | None = None) -> SearchResult:
    """``--method tas`` (:class:`TASSearcher`)."""
    return search("tas", space, budget, context)

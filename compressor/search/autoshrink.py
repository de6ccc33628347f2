"""``autoshrink``: AutoShrink's progressive shrinking (ALGORITHMS.md section 3) on the model's own topology.

The paper shrinks a DAG cell one edge at a time; applied to a pretrained model the same loop reads:

1. list the legal shrink moves of the current architecture: drop one kept removable residual block,
   or take one channel group one notch narrower (a notch is the next smaller width on a coarse grid
   of ``notch`` = 10% steps of the group's original width, rounded to the group's choices);
2. sample ``k`` of them at random (fewer if fewer exist);
3. score each candidate on the proxy data by accuracy and cost,
   ``score = accuracy - cost_weight * (log10(cost) - cost_offset)`` with cost = MACs by default (predicted latency in ms under a latency budget)
   (the paper's ``accuracy - 0.1 * (log10(MACs) - 6)``);
4. commit the best-scoring move and take a snapshot (architecture, score, cost);
5. repeat until the budget holds (optionally ``extra_steps`` further), and return the best-scoring
   snapshot within budget.

Every step commits exactly one move, so successive snapshots differ by exactly one notch or one block.

Candidates are scored in one of two ways (``proxy_train``):

- ``"shared"`` (default): a supernet, a deep copy of the context's model, holds shared weights.
  Each candidate's masks are applied to it (:func:`compressor.surgery.apply_masks`), the shared
  weights are fine-tuned for ``finetune_steps`` SGD steps under those masks, batch-norm statistics
  are re-estimated under the masks on ``calib_batches`` batches, and accuracy is measured on a fixed
  validation subset of ``eval_batches`` batches; then the shared weights are restored. All
  candidates of a step see the same fine-tuning and calibration batches. After a move is
  committed, the supernet is fine-tuned under the committed architecture for ``commit_steps``.
- ``"scratch"``: as the official code does, each candidate is materialized, re-initialised
  (``reset_parameters`` of every module) and trained from scratch with Adam (``scratch_lr`` 4e-3)
  for at most ``scratch_epochs`` epochs on a proxy subset, with early stopping (``patience``).

Under torchrun the ``k`` candidates of a step are split among the ranks (candidate ``i`` is scored
by rank ``i mod world``, on all of the data and with the seed a single process would use) and the
scores are gathered, so the decisions are exactly those of one process and a step takes about
``1/world`` of the time while ``k >= world``. Every rank commits the chosen move; rank 0's
supernet is then copied to the others.

With ``context.checkpoint`` the search state (step, architecture, history, the shared weights,
the position in the training stream, the random generator and the latency calibration) is
written there atomically after every step, and a later call with the same path continues from it.

The cost term is a function (:data:`CostFn`, default :func:`macs_cost`) so that a measured or
predicted latency can replace MACs: pass ``cost_fn=`` to :func:`autoshrink_search` (and set
``cost_offset`` to the log10 of a reference cost in that unit).
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset
from tqdm.auto import tqdm

from ..architecture import Architecture
from ..budget import Budget
from ..data import make_loader
from ..distributed import broadcast_module, map_over_ranks
from ..errors import CompressError
from ..resume import restoring, save_state
from ..space import ChannelGroup, SearchSpace, round_width
from ..surgery import apply_masks, materialize
from ..train import logits_of, reinitialize
from .base import SearchContext, SearchResult
from .greedy import repair

log = logging.getLogger(__name__)

CostFn = Callable[[SearchSpace, Architecture], float]
"""Cost of an architecture for the score's cost term (MACs by default; latency later)."""

DEFAULTS: dict = {
    "k": 10,  # candidate moves sampled per step
    "notch": 0.1,  # grid step of a channel notch, as a fraction of the group's original width
    "cost_weight": 0.1,  # score = accuracy - cost_weight * (log10(cost) - cost_offset)
    "cost_offset": 6.0,
    "proxy_train": "shared",  # "shared" (supernet + short fine-tune) or "scratch"
    "finetune_steps": 5,  # shared: SGD steps of the shared weights under each candidate's masks
    "finetune_lr": 0.01,
    "calib_batches": 2,  # shared: batches to re-estimate batch-norm statistics under the masks (0: off)
    "eval_batches": 8,  # shared: fixed validation batches that score a candidate (0: all)
    "commit_steps": 20,  # shared: SGD steps of the supernet under each committed architecture
    "scratch_epochs": None,  # scratch: at most this many epochs (None: the context's epochs)
    "scratch_lr": 4e-3,  # scratch: Adam learning rate (official code)
    "patience": 3,  # scratch: early stopping after this many epochs without a better val accuracy
    "scratch_train_images": 5000,  # scratch: proxy training subset (the paper's CIFAR-10 proxy)
    "scratch_val_images": 1000,
    "extra_steps": 0,  # steps to keep shrinking after the budget holds (snapshots to choose from)
    "max_steps": None,  # stop after this many steps (then repair if still over budget)
}

_INTS = {"k": 1, "finetune_steps": 0, "calib_batches": 0, "eval_batches": 0, "commit_steps": 0,
         "patience": 1, "scratch_train_images": 1, "scratch_val_images": 1, "extra_steps": 0}
_OPTIONAL_INTS = {"scratch_epochs": 1, "max_steps": 0}
_FLOATS = {"cost_weight": 0.0, "cost_offset": None, "finetune_lr": None, "scratch_lr": None}


# ---------------------------------------------------------------------- score and cost
def macs_cost(space: SearchSpace, arch: Architecture) -> float:
    """Default cost: MACs of ``arch`` at the deployment input shape, in closed form."""
    return float(space.macs(arch))


def score(accuracy: float, cost: float, cost_weight: float = 0.1, cost_offset: float = 6.0) -> float:
    """AutoShrink's objective: ``accuracy - cost_weight * (log10(cost) - cost_offset)``.

    With MACs as the cost and the defaults this is the paper's ``acc - 0.1 * (log10(MACs) - 6)``:
    every tenfold drop in MACs is worth 0.1 of accuracy.
    """
    if not cost > 0:
        raise ValueError(f"cost must be positive, got {cost!r}")
    return float(accuracy) - cost_weight * (math.log10(cost) - cost_offset)


# ---------------------------------------------------------------------- moves
@dataclass(frozen=True)
class Move:
    """One shrink move: ``("width", group, narrower width)`` or ``("block", block, False)``."""

    kind: str
    name: str
    value: int | bool

    def to_dict(self) -> dict:
        return {"move": self.kind, "name": self.name, "value": self.value}


def notch_grid(group: ChannelGroup, notch: float = 0.1) -> tuple[int, ...]:
    """Widths a group may take, ascending: ``notch`` steps of its original width rounded to its choices.

    For a group of 64 channels with choices 8, 16, ..., 64 and notch 0.1 this is
    (8, 16, 24, 32, 40, 48, 56, 64) (e.g. 0.9 * 64 = 57.6 rounds to 56).
    """
    if not 0.0 < notch <= 1.0:
        raise CompressError(f"notch {notch!r} must lie in (0, 1], e.g. 0.1")
    ratios = []
    i = 0
    while True:
        r = round(1.0 - i * notch, 9)  # 1 - 7 * 0.1 must be 0.3, not 0.29999999999999993
        if r <= 1e-9:
            break
        ratios.append(r)
        i += 1
    widths = {round_width(group.channels, r, group.choices) for r in ratios}
    widths.add(group.channels)
    return tuple(sorted(widths))


def narrower(group: ChannelGroup, width: int, notch: float = 0.1) -> int | None:
    """The next width below ``width`` on the group's notch grid, or None at the bottom."""
    below = [w for w in notch_grid(group, notch) if w < width]
    return below[-1] if below else None


def legal_moves(space: SearchSpace, arch: Architecture, notch: float = 0.1,
                budget: Budget | None = None) -> list[Move]:
    """Every single shrink move from ``arch``: one notch of a group, or dropping one kept block.

    With a ``budget``, moves that save none of its budgeted costs are left out.
    """
    moves: list[Move] = []
    for g in space.decision_groups:
        w = narrower(g, arch.widths[g.name], notch)
        if w is not None:
            moves.append(Move("width", g.name, w))
    for b in space.blocks:
        if arch.blocks[b.name]:
            moves.append(Move("block", b.name, False))
    if budget is not None:
        before = budget.costs(space, arch)
        moves = [m for m in moves if any(v < before[k] for k, v in budget.costs(space, apply_move(space, arch, m)).items())]
    return moves


def apply_move(space: SearchSpace, arch: Architecture, move: Move) -> Architecture:
    """``arch`` with one move applied."""
    widths, blocks = dict(arch.widths), dict(arch.blocks)
    if move.kind == "width":
        widths[move.name] = int(move.value)
    elif move.kind == "block":
        blocks[move.name] = bool(move.value)
    else:
        raise ValueError(f"unknown move kind {move.kind!r}")
    return space.architecture(widths, blocks)


def move_between(before: Architecture, after: Architecture) -> list[tuple[str, str, object, object]]:
    """The decisions that differ between two architectures: (kind, name, before, after)."""
    out = [("width", n, before.widths[n], after.widths[n]) for n in before.widths if before.widths[n] != after.widths[n]]
    out += [("block", n, before.blocks[n], after.blocks[n]) for n in before.blocks if before.blocks[n] != after.blocks[n]]
    return out


# ---------------------------------------------------------------------- options
def parse_options(options: dict | None, context_epochs: int = 5) -> dict:
    """The search's settings: :data:`DEFAULTS` overridden by ``options``, validated.

    Raises :class:`CompressError` with a one-line message for a bad value or an unknown key.
    """
    opts = dict(DEFAULTS)
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise CompressError(f"unknown autoshrink option {unknown[0]!r}: use one of {', '.join(DEFAULTS)}")
    opts.update(options)

    def bad(key, want):
        return CompressError(f"autoshrink option {key}={opts[key]!r} must be {want}, e.g. {key}={DEFAULTS[key]}")

    for key, lo in _INTS.items():
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise bad(key, f"an integer >= {lo}")
    for key, lo in _OPTIONAL_INTS.items():
        v = opts[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            raise bad(key, f"an integer >= {lo}")
    for key, lo in _FLOATS.items():
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (lo is not None and v < lo):
            raise bad(key, "a number" + (f" >= {lo}" if lo is not None else ""))
        opts[key] = float(v)
    for key in ("finetune_lr", "scratch_lr"):
        if not opts[key] > 0:
            raise bad(key, "positive")
    if isinstance(opts["notch"], bool) or not isinstance(opts["notch"], (int, float)) or not 0 < opts["notch"] <= 1:
        raise bad("notch", "a fraction in (0, 1]")
    opts["notch"] = float(opts["notch"])
    if opts["proxy_train"] not in ("shared", "scratch"):
        raise CompressError(f"autoshrink option proxy_train={opts['proxy_train']!r} must be shared or scratch")
    if opts["scratch_epochs"] is None:
        opts["scratch_epochs"] = max(1, int(context_epochs))
    return opts


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
        raise CompressError("autoshrink needs validation images to score candidates: provide validation data")
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


def _sgd_steps(model: nn.Module, batches: list, lr: float, device) -> None:
    if not batches:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-5)
    model.train()
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(logits_of(model(x)), y)
        if not torch.isfinite(loss):
            raise CompressError(f"autoshrink fine-tuning diverged (loss {loss.item()}): lower finetune_lr")
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
class _SharedScorer:
    """Scores candidates with shared weights: masks + short fine-tune on a supernet."""

    def __init__(self, space, context, opts, device):
        self.space, self.opts, self.device = space, opts, device
        self.supernet = copy.deepcopy(context.model).to(device).eval()
        self.train = _Batches(context.train_data, context.batch_size, context.seed)
        self.val = fixed_batches(context.val_data, context.batch_size, opts["eval_batches"], context.seed)
        self.step_batches: list = []
        self.calib_batches: list = []
        self.saved: dict | None = None

    def begin_step(self, step: int) -> None:
        self.step_batches = self.train.take(self.opts["finetune_steps"])
        self.calib_batches = self.train.take(self.opts["calib_batches"])
        self.saved = {k: v.detach().clone() for k, v in self.supernet.state_dict().items()}

    def accuracy(self, arch: Architecture, seed: int) -> float:
        torch.manual_seed(seed)
        try:
            with apply_masks(self.space, self.supernet, arch):
                _sgd_steps(self.supernet, self.step_batches, self.opts["finetune_lr"], self.device)
                _recalibrate_bn(self.supernet, self.calib_batches, self.device)
                return _accuracy(self.supernet, self.val, self.device)
        finally:
            self.supernet.load_state_dict(self.saved)

    def commit(self, arch: Architecture, seed: int) -> None:
        self.saved = None
        torch.manual_seed(seed)
        batches = self.train.take(self.opts["commit_steps"])
        with apply_masks(self.space, self.supernet, arch):
            _sgd_steps(self.supernet, batches, self.opts["finetune_lr"], self.device)
        broadcast_module(self.supernet)  # every rank committed alike; rank 0's copy settles any rounding

    def state_dict(self) -> dict:
        return {"supernet": self.supernet.state_dict(), "train": self.train.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.train.load_state_dict(state["train"])


class _ScratchScorer:
    """Scores candidates as the official code does: materialize, re-initialise, train with Adam."""

    def __init__(self, space, context, opts, device):
        self.space, self.opts, self.device = space, opts, device
        self.model = copy.deepcopy(context.model).cpu().eval()  # materialize traces on the CPU
        self.batch_size = context.batch_size
        self.seed = context.seed
        self.train_set = random_subset(context.train_data, opts["scratch_train_images"], context.seed)
        self.val = fixed_batches(random_subset(context.val_data, opts["scratch_val_images"], context.seed + 1),
                                  context.batch_size, 0, context.seed)

    def begin_step(self, step: int) -> None:
        pass

    def accuracy(self, arch: Architecture, seed: int) -> float:
        torch.manual_seed(seed)
        net = reinitialize(materialize(self.space, self.model, arch)).to(self.device)
        return train_from_scratch(net, self.train_set, self.val, epochs=self.opts["scratch_epochs"],
                                  lr=self.opts["scratch_lr"], patience=self.opts["patience"],
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


# ---------------------------------------------------------------------- the search
def _snapshot(space, budget, cost_fn, opts, arch, accuracy) -> dict:
    cost = cost_fn(space, arch)
    return {
        "accuracy": accuracy,
        "cost": cost,
        "score": score(accuracy, cost, opts["cost_weight"], opts["cost_offset"]),
        "macs": space.macs(arch),
        "params": space.params(arch),
        "fits": budget.fits(space, arch),
        "architecture": {"widths": dict(arch.widths), "blocks": dict(arch.blocks)},
    }


def best_snapshot(history: list[dict]) -> dict | None:
    """The best-scoring snapshot within budget among the steps of a search's history (first on ties)."""
    best = None
    for entry in history:
        if entry.get("fits") and "score" in entry and (best is None or entry["score"] > best["score"]):
            best = entry
    return best


def autoshrink_search(space: SearchSpace, budget: Budget, context: SearchContext | None = None,
                      cost_fn: CostFn | None = None) -> SearchResult:
    """Shrink from the full model one move per step until the budget holds; return the best snapshot.

    ``context`` must carry the model the space was built on, training data and validation data;
    ``context.options`` overrides :data:`DEFAULTS`. ``cost_fn`` replaces MACs in the score's cost
    term. The history has one entry per step: the sampled candidates with their accuracy, cost and
    score, the committed move, and the snapshot after it (architecture, accuracy, cost, score, MACs,
    params, whether it fits); the chosen snapshot's entry has ``"selected": True``. If no
    snapshot fits (``max_steps`` reached, or no move left), the last architecture is brought within
    budget by :func:`~compressor.search.greedy.repair`, whose moves follow with ``"repair": True``.
    """
    context = context or SearchContext()
    if cost_fn is None:  # with a latency budget, the score's cost term is the (target-calibrated) latency
        cost_fn = (lambda s, arch: budget.latency.predict(arch)) if budget.latency_ms is not None else macs_cost
    opts = parse_options(context.options, context.epochs)
    full = space.full()
    if budget.fits(space, full):
        return SearchResult(full, [{"move": "none", **budget.costs(space, full)}])
    budget.check_reachable(space)
    if context.model is None:
        raise CompressError("autoshrink needs the model to score candidates: pass it in the search context")
    if context.train_data is None or len(context.train_data) == 0:
        raise CompressError("autoshrink needs training images to score candidates: provide training data")
    if context.val_data is None or len(context.val_data) == 0:
        raise CompressError("autoshrink needs validation images to score candidates: provide validation data")
    device = torch.device(context.device)
    rng = np.random.default_rng(context.seed)
    scorer_cls = _SharedScorer if opts["proxy_train"] == "shared" else _ScratchScorer
    scorer = scorer_cls(space, context, opts, device)
    log.info("autoshrink: %s proxy, k=%d, notch %.2f, from %s", opts["proxy_train"], opts["k"], opts["notch"],
             budget.costs(space, full))

    arch = full
    history: list[dict] = []
    extra_left = opts["extra_steps"]
    step = 0
    if context.checkpoint is not None and context.checkpoint.is_file():
        step, arch, history, extra_left = _restore(context.checkpoint, space, budget, rng, scorer)
        log.info("autoshrink: resuming after step %d from %s", step, context.checkpoint)
    # the bar shows how far the cost has come down from the full model's to the budget (log scale),
    # so that it has an end and an ETA although the number of steps is not known in advance
    span = math.log(budget.excess(space, full))
    bar = tqdm(total=100, desc="autoshrink", unit="%", disable=True if context.quiet else None, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}{postfix}]")
    bar.update(_progress(space, budget, arch, span))
    try:
        while True:
            fits = budget.fits(space, arch)
            if fits:
                if extra_left <= 0:
                    break
                extra_left -= 1
            if opts["max_steps"] is not None and step >= opts["max_steps"]:
                break
            moves = legal_moves(space, arch, opts["notch"], budget)
            if not moves:
                log.warning("autoshrink: no shrink move left after %d steps", step)
                break
            step += 1
            picks = [moves[int(i)] for i in rng.choice(len(moves), size=min(opts["k"], len(moves)), replace=False)]
            scorer.begin_step(step)
            # under torchrun candidate i is scored by rank i mod world, with the seed one process uses
            accuracies = map_over_ranks(lambda i, move: scorer.accuracy(
                apply_move(space, arch, move), seed=_seed(context.seed, step, i)), picks)
            candidates = []
            for move, acc in zip(picks, accuracies):
                cand = apply_move(space, arch, move)
                cost = cost_fn(space, cand)
                candidates.append({**move.to_dict(), "accuracy": acc, "cost": cost,
                                   "score": score(acc, cost, opts["cost_weight"], opts["cost_offset"]),
                                   **budget.costs(space, cand)})
            best = max(range(len(candidates)), key=lambda i: (candidates[i]["score"], -i))
            move = picks[best]
            arch = apply_move(space, arch, move)
            scorer.commit(arch, seed=_seed(context.seed, step, -1))
            measured = _remeasure(space, budget, context, arch)
            snap = _snapshot(space, budget, cost_fn, opts, arch, candidates[best]["accuracy"])
            if measured is not None:
                snap["measured_ms"] = measured
            history.append({"step": step, **move.to_dict(), "candidates": candidates, **snap})
            if context.checkpoint is not None:  # before the step is reported as done
                _save(context.checkpoint, step, arch, history, extra_left, budget, rng, scorer)
            log.info("autoshrink step %d: %s %s -> %s; acc %.4f score %.4f, %s", step, move.kind, move.name,
                     move.value, snap["accuracy"], snap["score"], budget.costs(space, arch))
            bar.update(_progress(space, budget, arch, span) - bar.n)
            bar.set_postfix_str(f"step {step}: {move.kind} {move.name} acc {snap['accuracy']:.3f} "
                                f"score {snap['score']:.3f} over {budget.excess(space, arch):.2f}x")
    finally:
        bar.close()

    chosen = best_snapshot(history)
    if chosen is None:
        log.warning("autoshrink: no snapshot within budget after %d steps; repairing the last one", len(history))
        fixed = repair(space, budget, arch)
        history.extend({**entry, "repair": True} for entry in fixed.history)
        return SearchResult(fixed.architecture, history)
    chosen["selected"] = True
    result = space.architecture(chosen["architecture"]["widths"], chosen["architecture"]["blocks"])
    log.info("autoshrink: %d steps, chose step %d (score %.4f, acc %.4f), %s", len(history), chosen["step"],
             chosen["score"], chosen["accuracy"], budget.costs(space, result))
    return SearchResult(result, history)


def _progress(space, budget, arch, span: float) -> float:
    """Percent of the way from the full model's cost down to the budget, on a log scale."""
    return min(100.0, 100.0 * (1.0 - math.log(max(budget.excess(space, arch), 1.0)) / span))


def _save(path, step, arch, history, extra_left, budget, rng, scorer) -> None:
    """The search state after ``step``, written atomically: enough to continue it exactly."""
    state = {"step": step, "architecture": arch.to_dict(), "history": history, "extra_left": extra_left,
             "rng": rng.bit_generator.state, "scorer": scorer.state_dict(),
             "latency": budget.latency.coefficients() if budget.latency_ms is not None else None}
    save_state(path, state)


def _restore(path, space, budget, rng, scorer) -> tuple[int, Architecture, list, int]:
    """Load a search state saved by :func:`_save` into ``rng``, ``scorer`` and the budget's latency
    model; return the step it was saved after, the architecture, the history and the extra steps left."""
    with restoring(path, "the autoshrink search") as state:
        arch = Architecture.from_dict(state["architecture"])
        space.check(arch)
        scorer.load_state_dict(state["scorer"])
        rng.bit_generator.state = state["rng"]
        if state["latency"] is not None:
            budget.latency.set_coefficients(state["latency"])
        return int(state["step"]), arch, list(state["history"]), int(state["extra_left"])


def _remeasure(space, budget, context, arch) -> float | None:
    """With a latency budget and a way to measure on the target: measure the committed
    architecture and rescale the latency prediction to it, so later steps steer by the target."""
    if budget.latency_ms is None or context.measure is None:
        return None
    measured = float(context.measure(arch))
    predicted = budget.latency.predict(arch)
    if predicted > 0:
        budget.latency.rescale(measured / predicted)
    log.info("autoshrink: measured %.3f ms where %.3f ms was predicted", measured, predicted)
    return measured


def _seed(seed: int, step: int, i: int) -> int:
    return (int(seed) * 1_000_003 + step * 1009 + i + 1) % (2**31 - 1)

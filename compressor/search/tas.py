"""``tas``: Transformable Architecture Search (Dong & Yang, NeurIPS 2019), on any search space.

Re-implementation of ALGORITHMS.md section 1 on the full network of a :class:`SearchSpace`, with
forward hooks (the way :func:`compressor.surgery.apply_masks` applies an architecture):

Width
    Every decision group gets logits α over its candidate widths: the group's choices nearest the
    ratios 0.3, 0.4, ..., 1.0 of its channels (deduplicated; the full width is always one). A width
    keeps a prefix of the group's channels in importance-ranking order. Each forward pass uses two
    widths drawn by :func:`gumbel_top2` and mixes them with channel-wise interpolation
    (:func:`cwi`, :func:`mix_channels`) at every layer that *ends a chain* of the group's
    out-role layers (:func:`terminal_layers`): after a norm that follows a convolution, or at a
    convolution/linear layer no norm of the group follows. Channels beyond the wider of the two
    widths come out as zeros, so every consumer sees the narrower network. The mixing is linear,
    so mixing each branch of a residual sum mixes the sum.
Depth
    Consecutive removable residual blocks that run one after the other under the same parent form
    a stage (:func:`depth_stages`); its candidate depths are 0..n (how many of its removable
    blocks are kept, from the first), with logits β. All blocks run; the output of the stage's
    last removable block is replaced by ``Σ_d g_d · out_d`` with full Gumbel-softmax weights
    ``g``, where ``out_0`` is the stage's input and ``out_d`` the output of its d-th block, passed
    through what the dropped blocks after it leave behind (their trailing activations), exactly
    as a dropped block computes in :mod:`compressor.surgery`.
Cost
    Expected cost under plain softmax(α), and a block kept with the probability that the stage's
    depth reaches it (reverse cumulative sum of softmax(β)); see :mod:`.expected_cost`. The cost
    loss is the released code's asymmetric gate (:func:`cost_loss`), on the budget's binding
    metric; architecture loss = CE + ``cost_weight`` · cost loss.
Schedule
    The training data is split in halves; every step trains the weights on a batch of the first
    half (SGD, Nesterov, cosine) and α, β on a batch of the second (Adam). τ follows a cosine from
    ``tau_max`` to ``tau_min`` over all steps of the search.
Result
    argmax α, β, brought within budget by :func:`compressor.search.greedy.repair` when needed.
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
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..architecture import Architecture
from ..budget import Budget
from ..data import cycle, make_loader, split_halves
from ..distributed import all_mean, average_gradients, wrap
from ..errors import CompressError
from ..resume import restoring, save_state
from ..space import Coupling, SearchSpace, round_width
from ..surgery import channel_dim
from ..train import logits_of, pick_device
from .base import SearchContext, SearchResult
from .expected_cost import ExpectedCost
from .greedy import block_scores, repair

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_RATIOS", "TASOptions", "TASSupernet", "cost_loss", "cwi", "depth_stages", "gumbel_softmax",
    "gumbel_top2", "mix_channels", "tas_search", "tau_schedule", "terminal_layers", "width_candidates",
]

DEFAULT_RATIOS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


# ---------------------------------------------------------------------- options
@dataclass(frozen=True)
class TASOptions:
    """Settings of ``--method tas`` (``--option key=value``); defaults follow the official code."""

    ratios: tuple = DEFAULT_RATIOS  # width candidates, as fractions of each group's channels
    tolerance: float = 0.05  # t: no cost loss while the argmax cost is in [R - t*C_full, R]
    cost_weight: float = 2.0  # architecture loss = CE + cost_weight * cost loss
    w_lr: float = 0.1  # weights: SGD learning rate (cosine to 0 over the search)
    w_momentum: float = 0.9  # weights: Nesterov momentum
    w_wd: float = 5e-4  # weights: weight decay
    a_lr: float = 1e-3  # architecture logits: Adam learning rate
    a_betas: tuple = (0.5, 0.999)  # architecture logits: Adam betas
    a_wd: float = 1e-3  # architecture logits: Adam weight decay
    tau_max: float = 5.0  # Gumbel temperature at the first step
    tau_min: float = 0.1  # Gumbel temperature at the last step
    steps_per_epoch: int | None = None  # cap on steps per epoch (default: one pass over a half)
    init_std: float = 0.01  # logits start as N(0, init_std^2)
    fill: bool = False  # widen the result with greedy repair until the budget is just met

    @classmethod
    def from_dict(cls, options: dict | None) -> "TASOptions":
        """Validated options; raises :class:`CompressError` naming a bad or unknown key."""
        options = dict(options or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise CompressError(f"unknown tas option(s) {', '.join(unknown)}: use {', '.join(sorted(known))}")
        values = {}
        for key, value in options.items():
            try:
                values[key] = _convert(key, value)
            except (TypeError, ValueError):
                raise CompressError(f"tas option {key}={value!r} is not valid: see the defaults in "
                                    f"{cls.__name__} (e.g. {key}={getattr(cls, key)!r})") from None
        opts = cls(**values)
        opts._check()
        return opts

    def _check(self) -> None:
        def bad(key, why):
            raise CompressError(f"tas option {key}={getattr(self, key)!r} {why}")
        if not self.ratios or not all(0.0 < r <= 1.0 for r in self.ratios):
            bad("ratios", "must be a non-empty list of fractions in (0, 1], e.g. [0.3, 0.5, 1.0]")
        for key in ("w_lr", "a_lr", "tau_max", "tau_min"):
            if not getattr(self, key) > 0:
                bad(key, "must be positive")
        for key in ("tolerance", "cost_weight", "w_wd", "a_wd", "init_std"):
            if not getattr(self, key) >= 0:
                bad(key, "must not be negative")
        if not 0.0 <= self.w_momentum < 1.0:
            bad("w_momentum", "must lie in [0, 1)")
        if len(self.a_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.a_betas):
            bad("a_betas", "must be two numbers in [0, 1), e.g. [0.5, 0.999]")
        if self.tau_min > self.tau_max:
            bad("tau_min", f"must not exceed tau_max={self.tau_max}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            bad("steps_per_epoch", "must be a positive integer")


def _convert(key: str, value):
    if isinstance(value, str) and key in ("ratios", "a_betas"):
        value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
    if key in ("ratios", "a_betas"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        return tuple(float(v) for v in value)
    if key == "steps_per_epoch":
        if value is None:
            return None
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError(value)
        return int(float(value))
    if key == "fill":
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    if isinstance(value, bool):
        raise ValueError(value)
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(value)
    return out


# ---------------------------------------------------------------------- building blocks
def width_candidates(group, ratios: Sequence[float] = DEFAULT_RATIOS) -> tuple[int, ...]:
    """The group's choices nearest ``ratio * channels`` for each ratio, plus the full width; ascending."""
    found = {round_width(group.channels, float(r), group.choices) for r in ratios}
    found.add(group.channels)
    return tuple(sorted(found))


def cwi(x: torch.Tensor, target: int, dim: int = 1) -> torch.Tensor:
    """Channel-wise interpolation: adaptive average pooling of axis ``dim`` to ``target`` channels.

    Output channel ``i`` is the mean of input channels ``floor(i*C/target) .. ceil((i+1)*C/target)-1``
    (C = the input's channels), so widening repeats or blends neighbours: [1, 2, 3] → 4 channels
    is [1, 1.5, 2.5, 3]. On an NCHW tensor this is ``adaptive_avg_pool3d(x, (target, H, W))``; any
    other layout (``(N, C)``, ``(N, L, C)`` linear outputs, channels-last) pools the same axis.
    """
    dim = dim % x.dim()
    if x.shape[dim] == target:
        return x
    if x.dim() == 4 and dim == 1:
        return F.adaptive_avg_pool3d(x, (target, x.shape[2], x.shape[3]))
    moved = x.movedim(dim, -1)
    lead = moved.shape[:-1]
    pooled = F.adaptive_avg_pool1d(moved.reshape(-1, 1, moved.shape[-1]), target)
    return pooled.reshape(*lead, target).movedim(-1, dim)


def mix_channels(y: torch.Tensor, order: torch.Tensor, widths: Sequence[int], weights: torch.Tensor,
                 dim: int = 1) -> torch.Tensor:
    """TAS's mixture of two widths of the channels ``order`` of ``y`` (most important first).

    Width ``w`` keeps ``y``'s channels ``order[:w]``. Both are aligned to ``max(widths)`` with
    :func:`cwi` and summed with ``weights``; the result goes back to channels ``order[:max]``,
    channels ``order[max:]`` become zero and channels of ``y`` not in ``order`` are left as they are.
    """
    dim = dim % y.dim()
    wmax = max(int(w) for w in widths)
    z = y.index_select(dim, order[:wmax])
    mixed = None
    for w, h in zip(widths, weights):
        part = z.narrow(dim, 0, int(w))
        if int(w) < wmax:
            part = cwi(part, wmax, dim)
        part = part * h
        mixed = part if mixed is None else mixed + part
    mixed = mixed.to(y.dtype)
    rest = order.numel() - wmax
    if rest > 0:
        shape = list(y.shape)
        shape[dim] = rest
        mixed = torch.cat([mixed, y.new_zeros(shape)], dim)
    return y.index_copy(dim, order, mixed)


def _mix_layer_norm(module: nn.LayerNorm, x: torch.Tensor, order: torch.Tensor, widths: Sequence[int],
                    weights: torch.Tensor, dim: int) -> torch.Tensor:
    """Layer norm of each width over its own kept channels (as the pruned network computes it),
    then TAS's mixture: the analogue of the official code's one batch norm per width."""
    dim = dim % x.dim()
    wmax = max(int(w) for w in widths)
    xm = x.movedim(dim, -1)
    mixed = None
    for w, h in zip(widths, weights):
        keep = order[: int(w)]
        z = F.layer_norm(xm.index_select(-1, keep), (int(w),),
                         module.weight[keep] if module.weight is not None else None,
                         module.bias[keep] if module.bias is not None else None, module.eps)
        if int(w) < wmax:
            z = cwi(z, wmax, -1)
        mixed = h * z if mixed is None else mixed + h * z
    mixed = mixed.to(x.dtype)
    if wmax < order.numel():
        mixed = torch.cat([mixed, mixed.new_zeros(*mixed.shape[:-1], order.numel() - wmax)], -1)
    return xm.new_zeros(xm.shape).index_copy(-1, order, mixed).movedim(-1, dim)


def _mix_masked(y: torch.Tensor, idxs: torch.Tensor, pos: torch.Tensor, widths, weights, dim: int) -> torch.Tensor:
    """Fallback for a layer that holds only part of a group: ``h1·mask(w1) + h2·mask(w2)``, no CWI."""
    dim = dim % y.dim()
    scale = weights[0] * (pos < int(widths[0])) + weights[1] * (pos < int(widths[1]))
    shape = [1] * y.dim()
    shape[dim] = -1
    return y.index_copy(dim, idxs, y.index_select(dim, idxs) * scale.to(y.dtype).view(shape))


def _gumbel(shape, dtype, device, generator) -> torch.Tensor:
    while True:  # an exponential draw of exactly 0 would give an infinite Gumbel; draw again
        g = -torch.empty(shape, dtype=dtype).exponential_(generator=generator).log()
        if not torch.isinf(g).any():
            return g.to(device)


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``softmax((log_softmax(logits) + Gumbel) / tau)`` along the last axis (``-inf`` logits get 0)."""
    g = _gumbel(logits.shape, logits.dtype, logits.device, generator)
    return F.softmax((F.log_softmax(logits, -1) + g) / tau, -1)


def gumbel_top2(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None,
                eps: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """TAS's sampling of two candidates: ``(indices, weights)``, each of shape ``logits.shape[:-1] + (2,)``.

    ``ℓ = (log_softmax(logits) + Gumbel) / tau``; two distinct indices are drawn from
    ``softmax(ℓ)`` without replacement and without gradient; their weights are the softmax of
    ``ℓ`` over just those two, so gradients reach the logits only through the weights. Entries
    with logit ``-inf`` (padding) are never drawn; every row needs at least two finite logits.
    """
    flat = logits.reshape(-1, logits.shape[-1])
    valid = torch.isfinite(flat)
    if bool((valid.sum(-1) < 2).any()):
        raise ValueError("every row of logits needs at least two finite entries")
    g = _gumbel(flat.shape, flat.dtype, flat.device, generator)
    ell = (F.log_softmax(flat, -1) + g) / tau
    with torch.no_grad():
        probs = (F.softmax(ell, -1) + eps * valid).double().cpu()
        idx = torch.multinomial(probs, 2, replacement=False, generator=generator).to(flat.device)
    weights = F.softmax(ell.gather(-1, idx), -1)
    shape = logits.shape[:-1] + (2,)
    return idx.reshape(shape), weights.reshape(shape)


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


# ---------------------------------------------------------------------- structure of the network
def _example(space: SearchSpace, model: nn.Module) -> torch.Tensor:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, *space.input_shape, generator=gen).to(device)


def _run_traced(model: nn.Module, example: torch.Tensor, handles: list) -> None:
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def terminal_layers(space: SearchSpace, model: nn.Module, example: torch.Tensor | None = None,
                    groups: set[int] | None = None) -> dict[str, list[Coupling]]:
    """Out-role layers where a chain of layers of the same group ends, with those groups' couplings.

    One forward pass records every out-role layer's output tensor. An out-role layer is *not*
    terminal for group ``g`` when its output, unmodified (same data and version counter, so a
    view such as a permute still counts but an in-place activation in between does not), is the
    direct input of a norm layer that is also out-role for ``g``: the batch norm after its
    convolution, the layer norm after a permute. Any other consumer (a depthwise convolution, a
    residual addition, an activation) leaves the layer terminal, so the group's channels are
    mixed (and zeroed beyond the wider width) before they flow anywhere else. Layers are
    identified by module name; raw parameters (``space.unwrapped``) are not layers.
    """
    groups = set(range(len(space.groups))) if groups is None else set(groups)
    cands: dict[str, list[Coupling]] = {}
    for (name, role), found in space.couplings.items():
        if role != "out" or name in space.unwrapped:
            continue
        keep = [c for c in found if c.group in groups]
        if keep:
            cands[name] = keep
    produced: dict[tuple[int, int], list] = {}
    followed: set[tuple[str, int]] = set()

    def post(name):
        def fn(mod, inputs, output):
            if isinstance(output, torch.Tensor):
                produced.setdefault((output.data_ptr(), output.numel()), []).append((name, output, output._version))
        return fn

    def pre(name):
        mine = {c.group for c in cands[name]}

        def fn(mod, inputs):
            if not isinstance(mod, _NORMS):
                return
            if not inputs or not isinstance(inputs[0], torch.Tensor):
                return
            x = inputs[0]
            for producer, tensor, version in produced.get((x.data_ptr(), x.numel()), []):
                if producer != name and tensor._version == version:
                    for g in mine & {c.group for c in cands[producer]}:
                        followed.add((producer, g))
        return fn

    handles = []
    for name in cands:
        module = model.get_submodule(name)
        handles += [module.register_forward_pre_hook(pre(name)), module.register_forward_hook(post(name))]
    _run_traced(model, _example(space, model) if example is None else example, handles)
    out = {}
    for name, found in cands.items():
        keep = [c for c in found if (name, c.group) not in followed]
        if keep:
            out[name] = keep
    return out


def depth_stages(space: SearchSpace, model: nn.Module, example: torch.Tensor | None = None) -> list[list[int]]:
    """Runs of removable blocks (indices into ``space.blocks``) that form TAS depth stages.

    Blocks ``a`` and ``b`` are consecutive in a stage when they share a parent module and one
    forward pass shows that ``b``'s input is exactly ``a``'s output. Blocks that did not run are
    in no stage (they stay kept).
    """
    seen: dict[int, list] = {}

    def pre(j):
        def fn(mod, inputs):
            seen.setdefault(j, [inputs[0] if inputs else None, None])
        return fn

    def post(j):
        def fn(mod, inputs, output):
            if j in seen and seen[j][1] is None:
                seen[j][1] = output
        return fn

    handles = []
    for j, b in enumerate(space.blocks):
        module = model.get_submodule(b.name)
        handles += [module.register_forward_pre_hook(pre(j)), module.register_forward_hook(post(j))]
    _run_traced(model, _example(space, model) if example is None else example, handles)
    stages: list[list[int]] = []
    for j, b in enumerate(space.blocks):
        if j not in seen or not isinstance(seen[j][1], torch.Tensor):
            continue
        if stages:
            prev = stages[-1][-1]
            same_parent = space.blocks[prev].name.rpartition(".")[0] == b.name.rpartition(".")[0]
            if same_parent and seen[j][0] is seen[prev][1]:
                stages[-1].append(j)
                continue
        stages.append([j])
    return stages


# ---------------------------------------------------------------------- the supernet
class TASSupernet:
    """The full network of ``space`` with TAS's width and depth mixtures applied by forward hooks.

    ``alpha`` (slots × widths) and ``beta`` (stages × depths) are the architecture logits, padded
    with ``-inf`` where a row has fewer candidates (see ``width_mask``/``depth_mask``). Call
    :meth:`sample` before every forward pass; :meth:`set_sample` fixes a sample by hand.
    ``remove()`` takes every hook off ``model``.
    """

    def __init__(self, space: SearchSpace, model: nn.Module, ratios: Sequence[float] = DEFAULT_RATIOS,
                 init_std: float = 0.01, generator: torch.Generator | None = None,
                 example: torch.Tensor | None = None):
        self.space, self.model = space, model
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.device = device
        self.slot_groups: list[int] = []
        self.candidates: list[tuple[int, ...]] = []
        for gi, g in enumerate(space.groups):
            if g.is_decision:
                cands = width_candidates(g, ratios)
                if len(cands) >= 2:
                    self.slot_groups.append(gi)
                    self.candidates.append(cands)
        example = _example(space, model) if example is None else example
        self.stages = depth_stages(space, model, example)
        kw = max([len(c) for c in self.candidates], default=2)
        kd = max([len(s) + 1 for s in self.stages], default=2)
        self.width_mask = torch.zeros(len(self.slot_groups), kw, dtype=torch.bool, device=device)
        for s, c in enumerate(self.candidates):
            self.width_mask[s, : len(c)] = True
        self.depth_mask = torch.zeros(len(self.stages), kd, dtype=torch.bool, device=device)
        for s, st in enumerate(self.stages):
            self.depth_mask[s, : len(st) + 1] = True
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        self.alpha = nn.Parameter((torch.randn(self.width_mask.shape, generator=gen) * init_std).to(device))
        self.beta = nn.Parameter((torch.randn(self.depth_mask.shape, generator=gen) * init_std).to(device))
        self.cost = ExpectedCost(space, self.slot_groups, self.candidates, device)
        self.latency = None  # see use_latency

        def longs(values):
            return torch.as_tensor(values, dtype=torch.long, device=device)
        # block j of a stage (1-based position k) is kept when the stage's depth is >= k
        self._keep_rows = longs([j for st in self.stages for j in st])
        self._keep_at = (longs([s for s, st in enumerate(self.stages) for _ in st]),
                         longs([k + 1 for st in self.stages for k in range(len(st))]))
        self.terminal = terminal_layers(space, model, example, set(self.slot_groups))
        self.active = True
        self._handles: list = []
        self._buffers: dict[int, list] = {}
        self.set_full()
        self._install()

    # ------------------------------------------------------------------ hooks
    def _install(self) -> None:
        slot_of = {g: s for s, g in enumerate(self.slot_groups)}
        rank_pos = {}
        for g in self.slot_groups:
            group = self.space.groups[g]
            pos = np.empty(group.channels, dtype=np.int64)
            pos[group.ranking] = np.arange(group.channels)
            rank_pos[g] = pos
        for name, found in self.terminal.items():
            module = self.model.get_submodule(name)
            dim = channel_dim(module)
            for c in found:
                group = self.space.groups[c.group]
                pos = rank_pos[c.group][c.root_idxs]
                bijective = len(c.idxs) == group.channels and np.array_equal(np.sort(pos), np.arange(group.channels)) \
                    and len(np.unique(c.idxs)) == len(c.idxs)
                if bijective:
                    order = torch.as_tensor(np.asarray(c.idxs)[np.argsort(pos)], dtype=torch.long, device=self.device)
                    whole = isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1 \
                        and len(self.space.couplings[(name, "out")]) == 1 and module.normalized_shape[0] == len(c.idxs)
                    hook = self._width_hook(slot_of[c.group], dim, order=order, norm=module if whole else None)
                else:
                    idxs = torch.as_tensor(np.asarray(c.idxs), dtype=torch.long, device=self.device)
                    hook = self._width_hook(slot_of[c.group], dim, idxs=idxs,
                                            pos=torch.as_tensor(pos, dtype=torch.long, device=self.device))
                self._handles.append(module.register_forward_hook(hook))
        for s, stage in enumerate(self.stages):
            first = self.model.get_submodule(self.space.blocks[stage[0]].name)
            self._handles.append(first.register_forward_pre_hook(self._stage_start(s)))
            posts = [self.space.blocks[j].post_module() for j in stage]
            for k, j in enumerate(stage):
                module = self.model.get_submodule(self.space.blocks[j].name)
                hook = self._stage_end(s, posts) if k == len(stage) - 1 else self._stage_step(s)
                self._handles.append(module.register_forward_hook(hook))

    def _width_hook(self, s: int, dim: int, order=None, idxs=None, pos=None, norm=None):
        cands = self.candidates[s]

        def hook(module, inputs, output):
            if not self.active:
                return None
            i1, i2 = self._width_idx[s]
            widths = (cands[i1], cands[i2])
            h = self._width_w[s]
            if norm is not None:
                return _mix_layer_norm(norm, inputs[0], order, widths, h, dim)
            if order is not None:
                return mix_channels(output, order, widths, h, dim)
            return _mix_masked(output, idxs, pos, widths, h, dim)
        return hook

    def _stage_start(self, s: int):
        def hook(module, inputs):
            if self.active:
                self._buffers[s] = [inputs[0]]
        return hook

    def _stage_step(self, s: int):
        def hook(module, inputs, output):
            if self.active and s in self._buffers:
                self._buffers[s].append(output)
        return hook

    def _stage_end(self, s: int, posts: list[nn.Module]):
        identity = [isinstance(p, nn.Identity) for p in posts]

        def hook(module, inputs, output):
            if not self.active or s not in self._buffers:
                return None
            outs = self._buffers.pop(s) + [output]
            weights = self._depth_w[s]
            n = len(posts)
            mixed = None
            for d in range(n + 1):
                o = outs[d]
                for k in range(d, n):  # what the dropped blocks d+1..n leave: their trailing activations
                    if not identity[k]:
                        o = posts[k](o)
                if o.shape != output.shape:
                    o = cwi(o, output.shape[1], 1)
                term = weights[d] * o
                mixed = term if mixed is None else mixed + term
            return mixed.to(output.dtype)
        return hook

    def remove(self) -> None:
        """Take every hook off the model."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._buffers = {}

    # ------------------------------------------------------------------ sampling
    def masked_alpha(self) -> torch.Tensor:
        return self.alpha.masked_fill(~self.width_mask, float("-inf"))

    def masked_beta(self) -> torch.Tensor:
        return self.beta.masked_fill(~self.depth_mask, float("-inf"))

    def sample(self, tau: float, generator: torch.Generator | None = None, grad: bool = True) -> None:
        """Draw two widths per group (:func:`gumbel_top2`) and depth weights per stage (Gumbel softmax)."""
        with torch.set_grad_enabled(grad):
            if self.slot_groups:
                idx, w = gumbel_top2(self.masked_alpha(), tau, generator)
                self._width_idx, self._width_w = idx.tolist(), w
            if self.stages:
                self._depth_w = gumbel_softmax(self.masked_beta(), tau, generator)

    def set_sample(self, width_idx, width_w: torch.Tensor, depth_w: torch.Tensor) -> None:
        """Fix the sample by hand: per slot two candidate indices and weights; per stage depth weights."""
        self._width_idx = [[int(i) for i in row] for row in width_idx]
        self._width_w = width_w
        self._depth_w = depth_w

    def set_full(self) -> None:
        """A sample that computes the unpruned network: both widths full, every stage at full depth."""
        kd = self.depth_mask.shape[1]
        depth = torch.as_tensor([len(st) for st in self.stages], dtype=torch.long)
        self.set_sample([[len(c) - 1] * 2 for c in self.candidates],
                        torch.full((len(self.slot_groups), 2), 0.5, device=self.device),
                        F.one_hot(depth, kd).float().to(self.device))

    # ------------------------------------------------------------------ distribution, cost, result
    def width_probs(self) -> torch.Tensor:
        """softmax(α) per slot (zeros at padding)."""
        return F.softmax(self.masked_alpha(), -1)

    def depth_probs(self) -> torch.Tensor:
        """softmax(β) per stage (zeros at padding)."""
        return F.softmax(self.masked_beta(), -1)

    def keep_probs(self) -> torch.Tensor:
        """Probability that each block of the space is kept: P(depth of its stage reaches it)."""
        keep = torch.ones(len(self.space.blocks), dtype=torch.float64, device=self.device)
        if not self.stages:
            return keep
        reach = self.depth_probs().flip(-1).cumsum(-1).flip(-1).double()
        return keep.index_put((self._keep_rows,), reach[self._keep_at])

    def expected_cost(self, metric: str = "macs") -> torch.Tensor:
        """Expected MACs, params or latency under softmax(α) and softmax(β), differentiable in both."""
        if metric == "latency_ms":
            return self.latency_cost(self.width_probs(), self.keep_probs())
        return self.cost(metric, self.width_probs(), self.keep_probs())

    def argmax_encoded(self) -> tuple[np.ndarray, np.ndarray]:
        """(width of every group, keep flag of every block) of the argmax architecture."""
        widths = self.space.cost.t.full_widths.copy()
        kept = np.ones(len(self.space.blocks), dtype=bool)
        with torch.no_grad():
            wi = self.masked_alpha().argmax(-1).tolist() if self.slot_groups else []
            di = self.masked_beta().argmax(-1).tolist() if self.stages else []
        for s, i in enumerate(wi):
            widths[self.slot_groups[s]] = self.candidates[s][i]
        for s, d in enumerate(di):
            for k, j in enumerate(self.stages[s]):
                kept[j] = k < d
        return widths, kept

    def use_latency(self, latency_model) -> None:
        """Also offer ``latency_ms``: predicted by ``latency_model``, expected latency differentiable."""
        self.latency = latency_model
        self.latency_cost = latency_model.expected_cost(self.slot_groups, self.candidates, self.alpha.device)

    def argmax_costs(self) -> dict[str, float]:
        widths, kept = self.argmax_encoded()
        costs = {"macs": self.space.cost.macs(widths, kept), "params": self.space.cost.params(widths, kept)}
        if self.latency is not None:
            costs["latency_ms"] = self.latency.predict_encoded(widths, kept)
        return costs

    def architecture(self) -> Architecture:
        """The argmax architecture: most probable width of every group and depth of every stage."""
        widths, kept = self.argmax_encoded()
        return self.space.architecture(
            {g.name: int(widths[i]) for i, g in enumerate(self.space.groups) if g.is_decision},
            {b.name: bool(kept[j]) for j, b in enumerate(self.space.blocks)},
        )


# ---------------------------------------------------------------------- the search
def tas_search(space: SearchSpace, budget: Budget, context: SearchContext) -> SearchResult:
    """TAS on a deep copy of ``context.model``; returns the argmax architecture within ``budget``."""
    opts = TASOptions.from_dict(context.options)
    full_arch = space.full()
    if budget.fits(space, full_arch):
        return SearchResult(full_arch, [{"note": "the full model meets the budget", **budget.costs(space, full_arch)}])
    if context.model is None or context.train_data is None:
        raise CompressError("tas trains while it searches: it needs the model and training data")
    device = pick_device(context.device)
    fork = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(context.seed)
        arch, history = _search(space, budget, context, opts, device)
    return _finish(space, budget, context, opts, arch, history)


def _search(space, budget, context, opts: TASOptions, device):
    gen = torch.Generator().manual_seed(context.seed)
    model = copy.deepcopy(context.model).to(device)
    net = TASSupernet(space, model, opts.ratios, opts.init_std, gen)
    if budget.latency_ms is not None:
        net.use_latency(budget.latency)
    weights = [p for p in model.parameters() if p.requires_grad]
    first, second = split_halves(context.train_data, context.seed)
    # under torchrun every rank takes its own shard of each half and the gradients are averaged
    w_loader = make_loader(first, context.batch_size, shuffle=True, seed=context.seed, shard=True)
    a_loader = make_loader(second, context.batch_size, shuffle=True, seed=context.seed + 1, shard=True)
    steps = min(len(w_loader), len(a_loader))
    if opts.steps_per_epoch is not None:
        steps = min(steps, opts.steps_per_epoch)
    if steps == 0 or context.epochs < 1:
        raise CompressError("tas needs at least one epoch and one batch per half of the training data")
    total = steps * context.epochs
    w_opt = torch.optim.SGD(weights, lr=opts.w_lr, momentum=opts.w_momentum, nesterov=opts.w_momentum > 0,
                            weight_decay=opts.w_wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=total)
    a_opt = torch.optim.Adam([net.alpha, net.beta], lr=opts.a_lr, betas=opts.a_betas, weight_decay=opts.a_wd)
    bounds = {k: v for k, v in budget.to_dict().items() if v is not None}
    full = budget.costs(space, space.full())
    sizes = [len(c) for c in net.candidates] or [0]
    log.info("tas: %d width decisions (%d-%d candidates each), %d depth stages of %s blocks, %d steps",
             len(net.slot_groups), min(sizes), max(sizes), len(net.stages), [len(s) for s in net.stages], total)
    history: list[dict] = []
    first = 1
    optimizers = {"w_opt": w_opt, "a_opt": a_opt, "sched": sched}
    if context.checkpoint is not None and context.checkpoint.is_file():
        first, history = _restore(context.checkpoint, model, net, optimizers, gen)
        log.info("tas: resuming after epoch %d from %s", first - 1, context.checkpoint)
    done_steps = steps * (first - 1)  # a resumed search replays the data order up to where it stopped
    w_iter, a_iter = cycle(w_loader, skip=done_steps), cycle(a_loader, skip=done_steps)
    bar = tqdm(total=total, initial=steps * (first - 1), desc="tas", unit="step",
               disable=True if context.quiet else None, dynamic_ncols=True)
    step = steps * (first - 1)
    ddp = wrap(model, device)  # the weight steps (every block runs in TAS); the architecture steps call the model itself
    model.train()
    try:
        for epoch in range(first, context.epochs + 1):
            start = time.perf_counter()
            sums = {"weight_ce": 0.0, "ce": 0.0, "cost_loss": 0.0}
            for _ in range(steps):
                tau = tau_schedule(step, total, opts.tau_max, opts.tau_min)
                # weights, on the first half, with a sampled mixture (no gradient to α, β)
                x, y = next(w_iter)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                net.sample(tau, gen, grad=False)
                loss = F.cross_entropy(logits_of(ddp(x)), y)
                w_opt.zero_grad(set_to_none=True)
                loss.backward()
                w_opt.step()
                sched.step()
                # architecture, on the second half
                x, y = next(a_iter)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                for p in weights:
                    p.requires_grad_(False)
                try:
                    net.sample(tau, gen, grad=True)
                    ce = F.cross_entropy(logits_of(model(x)), y)
                    current = net.argmax_costs()
                    metric = max(bounds, key=lambda k: current[k] / bounds[k])
                    closs = cost_loss(net.expected_cost(metric), current[metric], bounds[metric], full[metric],
                                      opts.tolerance)
                    arch_loss = ce + opts.cost_weight * closs
                    a_opt.zero_grad(set_to_none=True)
                    arch_loss.backward()
                    average_gradients([net.alpha, net.beta])  # every rank takes the same step
                    a_opt.step()
                finally:
                    for p in weights:
                        p.requires_grad_(True)
                values = tuple(all_mean(torch.stack([loss.detach(), ce.detach(), closs.detach().to(ce)])).tolist())
                if not all(math.isfinite(v) for v in values):
                    raise CompressError(f"tas diverged at step {step + 1} (losses {values}): lower w_lr or a_lr")
                for key, v in zip(sums, values):
                    sums[key] += v
                step += 1
                bar.update()
                if not bar.disable:
                    ratio = current[metric] / bounds[metric]
                    bar.set_postfix_str(f"tau {tau:.2f} ce {values[1]:.3f} {metric} {ratio:.2f}x budget")
            with torch.no_grad():
                current = net.argmax_costs()
                record = {"epoch": epoch, "tau": tau, **{k: v / steps for k, v in sums.items()}}
                for k in bounds:
                    record[f"argmax_{k}"] = current[k]
                    record[f"expected_{k}"] = float(net.expected_cost(k))
                record["seconds"] = time.perf_counter() - start
            history.append(record)
            if context.checkpoint is not None:  # before the epoch is reported as done
                _save(context.checkpoint, epoch, history, model, net, optimizers, gen)
            summary = " ".join(f"{k} {record[k]:.4g}" for k in record if k not in ("epoch", "seconds"))
            if bar.disable:
                log.info("tas epoch %d/%d: %s (%.1fs)", epoch, context.epochs, summary, record["seconds"])
    finally:
        bar.close()
        net.remove()
    return net.architecture(), history


def _save(path, epoch, history, model, net, optimizers: dict, gen) -> None:
    """The search state after ``epoch`` (weights, α, β, optimisers, random state), written atomically."""
    state = {"epoch": epoch, "history": history, "model": model.state_dict(), "alpha": net.alpha.detach().cpu(),
             "beta": net.beta.detach().cpu(), "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
             **{k: v.state_dict() for k, v in optimizers.items()}}
    save_state(path, state)


def _restore(path, model, net, optimizers: dict, gen) -> tuple[int, list]:
    """Load a search state saved by :func:`_save`; return the next epoch and the history so far."""
    with restoring(path, "the tas search") as state, torch.no_grad():
        model.load_state_dict(state["model"])
        net.alpha.copy_(state["alpha"])
        net.beta.copy_(state["beta"])
        for key, obj in optimizers.items():
            obj.load_state_dict(state[key])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        return int(state["epoch"]) + 1, list(state["history"])


def _finish(space, budget, context, opts, arch, history):
    found = budget.costs(space, arch)
    record = {"result": "argmax", **{f"argmax_{k}": v for k, v in found.items()}, "fits": budget.fits(space, arch)}
    if not record["fits"] or opts.fill:
        scores = block_scores(space, dataclasses.replace(context, model=copy.deepcopy(context.model)))
        repaired = repair(space, budget, arch, scores).architecture
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

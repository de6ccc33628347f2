"""TAS's supernet: the full network of a search space with the width and depth mixtures applied by
forward hooks (docs/ALGORITHMS.md, section tas; the mechanics are in :mod:`.tas`'s docstring)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..architecture import Architecture
from ..costs import MacsMetric, Metric, ParamsMetric
from ..space import SearchSpace
from ..surgery import channel_dim
from .tas_ops import (
    _example,
    _mix_layer_norm,
    _mix_masked,
    cwi,
    depth_stages,
    gumbel_softmax,
    gumbel_top2,
    mix_channels,
    terminal_layers,
)

__all__ = ["DEFAULT_RATIOS", "TASSupernet"]

DEFAULT_RATIOS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


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
        table = space.width_table(ratios, with_full=True)
        for gi, g in enumerate(space.groups):
            if g.is_decision:
                cands = table[g.name]
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
        self.metrics: dict[str, Metric] = {"macs": MacsMetric(space), "params": ParamsMetric(space)}
        self._expected: dict = {}  # metric name -> its expectation over this supernet's candidates

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
        """Expected value of a metric (MACs, params, or one added by :meth:`use_metric`) under
        softmax(α) and softmax(β), differentiable in both."""
        if metric not in self._expected:
            self._expected[metric] = self.metrics[metric].expectation(self.slot_groups, self.candidates,
                                                                      self.alpha.device)
        return self._expected[metric](self.width_probs(), self.keep_probs())

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

    def use_metric(self, metric: Metric) -> None:
        """Also cost architectures by ``metric`` (e.g. the target's predicted latency), under its name."""
        self.metrics[metric.name] = metric
        self._expected.pop(metric.name, None)

    def argmax_costs(self) -> dict[str, float]:
        """Every metric's value at the argmax architecture."""
        widths, kept = self.argmax_encoded()
        return {k: m.value_encoded(widths, kept) for k, m in self.metrics.items()}

    def architecture(self) -> Architecture:
        """The argmax architecture: most probable width of every group and depth of every stage."""
        widths, kept = self.argmax_encoded()
        return self.space.architecture(
            {g.name: int(widths[i]) for i, g in enumerate(self.space.groups) if g.is_decision},
            {b.name: bool(kept[j]) for j, b in enumerate(self.space.blocks)},
        )

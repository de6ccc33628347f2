"""Differentiable expected MACs and params under independent distributions over the decisions.

TAS (ALGORITHMS.md section 1) needs the expected cost of the network under its architecture
distribution, with gradients reaching the width and depth logits. The closed-form tables of
:class:`~compressor.costs.CostModel` make that a few tensor operations:

* every *dim* (a layer dimension that may shrink) is ``const + Σ_entries table[e, width of the
  entry's group]``; under a distribution ``p`` over a group's candidate widths ``w_c`` its
  expectation is ``const + Σ_entries Σ_c p_c · table[e, w_c]``;
* every MAC or param term is ``coef · dim_a · dim_b · [block kept]``; its expectation is taken
  as ``coef · E[dim_a] · E[dim_b] · P(block kept)``, the product of expectations TAS uses (exact
  when the two dims follow different groups, an approximation when they follow the same one);
* the MACs the cost model counts outside Conv2d/Linear layers (``extra_macs``) are a constant.

With one-hot probabilities this is exactly ``space.macs(arch)`` / ``space.params(arch)`` (before
the final rounding to an integer). Everything is computed in float64.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ExpectedCost", "expected_macs", "expected_params"]


class ExpectedCost:
    """Expected MACs/params of ``space`` when some groups ("slots") have a distribution over widths.

    ``slot_groups[s]`` is the index (into ``space.groups``) of the group slot ``s`` controls and
    ``candidates[s]`` its candidate widths. Every other group stays at its full width. Call
    :meth:`macs` / :meth:`params` with a probability matrix ``(n_slots, K)`` (row ``s`` padded with
    zeros beyond ``len(candidates[s])``) and the keep probability of every block of ``space``.
    """

    def __init__(self, space, slot_groups: Sequence[int], candidates: Sequence[Sequence[int]],
                 device: str | torch.device | None = None):
        if len(slot_groups) != len(candidates):
            raise ValueError(f"{len(slot_groups)} slot groups but {len(candidates)} candidate lists")
        if len(set(slot_groups)) != len(slot_groups):
            raise ValueError("a group may have only one slot")
        t = space.cost.t
        self.space = space
        self.n_slots = len(slot_groups)
        self.width = max([len(c) for c in candidates], default=1)
        self.extra_macs = float(space.cost.extra_macs)
        slot_of = np.full(len(space.groups), -1, dtype=np.int64)
        for s, (g, cands) in enumerate(zip(slot_groups, candidates)):
            limit = space.groups[g].channels
            if len(cands) == 0 or any(int(w) < 0 or int(w) > limit for w in cands):
                raise ValueError(f"candidate widths {list(cands)} of group {space.groups[g].name} "
                                 f"must be non-empty and within 0..{limit}")
            slot_of[g] = s
        # constant part of every dim: its own constant plus every entry of a group without a slot
        const = t.dim_const.astype(np.float64).copy()
        entry_slot = slot_of[t.entry_group] if len(t.entry_dim) else np.zeros(0, dtype=np.int64)
        fixed = entry_slot < 0
        if fixed.any():
            rows = np.flatnonzero(fixed)
            add = t.entry_table[rows, t.full_widths[t.entry_group[rows]]]
            const += np.bincount(t.entry_dim[rows], weights=add, minlength=len(const))
        var = np.flatnonzero(~fixed)
        table = np.zeros((len(var), self.width))
        for k, e in enumerate(var):
            cands = np.asarray(candidates[entry_slot[e]], dtype=np.int64)
            table[k, : len(cands)] = t.entry_table[e, cands]
        dev = torch.device(device) if device is not None else torch.device("cpu")
        f64 = dict(dtype=torch.float64, device=dev)
        self._const = torch.as_tensor(const, **f64)
        self._var_dim = torch.as_tensor(t.entry_dim[var], dtype=torch.long, device=dev)
        self._var_slot = torch.as_tensor(entry_slot[var], dtype=torch.long, device=dev)
        self._var_table = torch.as_tensor(table, **f64)
        self._terms = {"macs": self._term_tensors(t.mac_terms, dev), "params": self._term_tensors(t.param_terms, dev)}
        self.n_blocks = int(t.n_blocks)

    @staticmethod
    def _term_tensors(terms: np.ndarray, dev):
        coef = torch.as_tensor(terms[:, 0], dtype=torch.float64, device=dev)
        a = torch.as_tensor(terms[:, 1].astype(np.int64), device=dev)
        b = torch.as_tensor(terms[:, 2].astype(np.int64), device=dev)
        block = terms[:, 3].astype(np.int64)
        inside = np.flatnonzero(block >= 0)
        return (coef, a, b, torch.as_tensor(inside, device=dev), torch.as_tensor(block[inside], device=dev))

    def dims(self, probs: torch.Tensor) -> torch.Tensor:
        """Expected size of every dim, given the ``(n_slots, K)`` probability matrix."""
        const = self._const
        if self._var_table.shape[0] == 0:
            return const
        probs = probs.to(const.device, torch.float64)
        if probs.shape != (self.n_slots, self.width):
            raise ValueError(f"probabilities must have shape {(self.n_slots, self.width)}, got {tuple(probs.shape)}")
        add = (self._var_table * probs[self._var_slot]).sum(dim=1)
        return const.index_add(0, self._var_dim, add)

    def _total(self, metric: str, probs: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        coef, a, b, inside, block = self._terms[metric]
        dims = self.dims(probs)
        value = coef * dims[a] * dims[b]
        if len(inside):
            if keep is None:
                keep = torch.ones(self.n_blocks, dtype=torch.float64, device=dims.device)
            keep = torch.as_tensor(keep).to(dims.device, torch.float64)
            if keep.shape != (self.n_blocks,):
                raise ValueError(f"keep probabilities must have shape ({self.n_blocks},), got {tuple(keep.shape)}")
            alive = torch.ones_like(value).index_put((inside,), keep[block])
            value = value * alive
        return value.sum()

    def macs(self, probs: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Expected MACs (a float64 scalar tensor, differentiable in ``probs`` and ``keep``)."""
        return self._total("macs", probs, keep) + self.extra_macs

    def params(self, probs: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Expected number of parameters (a float64 scalar tensor)."""
        return self._total("params", probs, keep)

    def __call__(self, metric: str, probs: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        if metric not in self._terms:
            raise ValueError(f"unknown cost metric {metric!r}: use macs or params")
        return self.macs(probs, keep) if metric == "macs" else self.params(probs, keep)


def _prepare(space, width_probs, candidates):
    if len(width_probs) != len(space.groups):
        raise ValueError(f"need one entry per group of the space ({len(space.groups)}), got {len(width_probs)}")
    if candidates is not None and len(candidates) != len(space.groups):
        raise ValueError(f"need one candidate list per group of the space ({len(space.groups)}), got {len(candidates)}")
    slots, cands, rows = [], [], []
    for i, p in enumerate(width_probs):
        if p is None:
            continue
        c = candidates[i] if candidates is not None and candidates[i] is not None else space.groups[i].choices
        p = torch.as_tensor(p)
        if p.shape != (len(c),):
            raise ValueError(f"group {space.groups[i].name}: {len(c)} candidate widths but probabilities of shape "
                             f"{tuple(p.shape)}")
        slots.append(i)
        cands.append([int(w) for w in c])
        rows.append(p)
    width = max([len(c) for c in cands], default=1)
    device = rows[0].device if rows else None
    probs = (torch.stack([F.pad(r.to(torch.float64), (0, width - len(r))) for r in rows]) if rows
             else torch.zeros(0, width, dtype=torch.float64))
    return ExpectedCost(space, slots, cands, device), probs


def expected_macs(space, width_probs: Sequence, keep_probs=None, candidates: Sequence | None = None) -> torch.Tensor:
    """Expected MACs of ``space`` (a differentiable float64 scalar).

    ``width_probs[i]``: probabilities over the candidate widths of ``space.groups[i]`` (``None``:
    the group stays at its full width, as fixed groups do). ``candidates[i]``: those widths
    (default: the group's ``choices``). ``keep_probs``: probability that each block of
    ``space.blocks`` is kept (default: all kept).
    """
    cost, probs = _prepare(space, width_probs, candidates)
    return cost.macs(probs, keep_probs)


def expected_params(space, width_probs: Sequence, keep_probs=None, candidates: Sequence | None = None) -> torch.Tensor:
    """Expected number of parameters; arguments as for :func:`expected_macs`."""
    cost, probs = _prepare(space, width_probs, candidates)
    return cost.params(probs, keep_probs)

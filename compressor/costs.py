"""Closed-form MACs and params of any architecture in a search space, and the :class:`Metric`
interface every cost a budget bounds implements (MACs, params, predicted latency).

Every layer dimension that can shrink (a convolution's output channels, a linear layer's input
features, ...) is a *dim*: a constant part plus, for each channel group it follows, the number of
its channels kept at the group's width (a lookup table, exact even when a layer sees only part of
a group, as after a split, or many copies of it, as after a flatten). Every parameter tensor and
every Conv2d/Linear layer's MACs is then ``coef * dim_a * dim_b``, zero when the residual block
around it is dropped. Evaluating an architecture is a handful of vectorised numpy operations.

Expected costs (TAS) under independent distributions over the decisions use the same tables:

* every dim is ``const + Σ_entries table[e, width of the entry's group]``; under a distribution
  ``p`` over a group's candidate widths ``w_c`` its expectation is
  ``const + Σ_entries Σ_c p_c · table[e, w_c]``;
* every MAC or param term ``coef · dim_a · dim_b · [block kept]`` is taken as
  ``coef · E[dim_a] · E[dim_b] · P(block kept)``, the product of expectations TAS uses (exact
  when the two dims follow different groups, an approximation when they follow the same one);
* the MACs counted outside Conv2d/Linear layers (``extra_macs``) are a constant.

With one-hot probabilities this is exactly ``space.macs(arch)`` / ``space.params(arch)`` (before
the final rounding to an integer). Everything is computed in float64.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass
class CostTables:
    """The arrays behind :class:`CostModel` (see the module docstring)."""

    dim_const: np.ndarray  # (n_dims,) constant part of every dim; dim 0 is the constant 1
    entry_dim: np.ndarray  # (n_entries,) dim each entry adds to
    entry_group: np.ndarray  # (n_entries,) group whose width indexes the entry's table
    entry_table: np.ndarray  # (n_entries, max_channels + 1) kept layer channels per group width
    param_terms: np.ndarray  # (n, 4): coef, dim_a, dim_b, block (-1: none)
    mac_terms: np.ndarray  # (n, 4)
    full_widths: np.ndarray  # (n_groups,) original width of every group
    n_blocks: int

    @classmethod
    def from_model(cls, model: nn.Module, groups, couplings, unwrapped: dict, positions: dict, blocks) -> CostTables:
        """Build the tables from a traced model and its channel groups (see ``SearchSpace.build``).

        ``positions`` maps each Conv2d/Linear layer to its output positions (H*W or rows) summed
        over its calls; a layer's MACs are its weight's size times that.
        """
        builder = _Builder(groups, couplings)
        block_of = _block_finder([b.name for b in blocks])
        for name, module in model.named_modules():
            block = block_of(name)
            for pname, p in module.named_parameters(recurse=False):
                full = f"{name}.{pname}" if name else pname
                coef, a, b = builder.param_term(name, module, pname, p, unwrapped.get(full), full)
                builder.params.append((coef, a, b, block))
                if pname == "weight" and name in positions:
                    builder.macs.append((coef * positions[name], a, b, block))
        return builder.finish(len(blocks))


class _Builder:
    def __init__(self, groups, couplings):
        self.groups, self.couplings = groups, couplings
        self.const = [1.0]
        self.entries: list[tuple[int, int, np.ndarray]] = []
        self.params: list[tuple] = []
        self.macs: list[tuple] = []
        self.rank_pos = []
        for g in groups:
            pos = np.empty(g.channels, dtype=np.int64)
            pos[g.ranking] = np.arange(g.channels)
            self.rank_pos.append(pos)

    def dim(self, key: tuple[str, str], size: int) -> tuple[float, int]:
        """(factor, dim index): a constant size folds into the factor with dim 0."""
        found = self.couplings.get(key)
        if not found:
            return float(size), 0
        d = len(self.const)
        coupled = 0
        for c in found:
            g = self.groups[c.group]
            hist = np.bincount(self.rank_pos[c.group][c.root_idxs], minlength=g.channels)
            table = np.concatenate([[0], np.cumsum(hist)])
            self.entries.append((d, c.group, table))
            coupled += len(c.idxs)
        self.const.append(float(size - coupled))
        return 1.0, d

    def param_term(self, name, module, pname, p, unwrapped_dim, full_name):
        numel = p.numel()
        if isinstance(module, nn.Conv2d) and pname == "weight":
            k = p.shape[2] * p.shape[3]
            fo, do = self.dim((name, "out"), module.out_channels)
            if module.groups == module.in_channels == module.out_channels and module.groups > 1:
                return fo * k, do, 0  # depthwise: one input channel per output channel
            fi, di = self.dim((name, "in"), module.in_channels)
            return fo * fi * k / module.groups, do, di
        if isinstance(module, nn.Linear) and pname == "weight":
            fo, do = self.dim((name, "out"), module.out_features)
            fi, di = self.dim((name, "in"), module.in_features)
            return fo * fi, do, di
        if isinstance(module, (nn.Conv2d, nn.Linear) + _NORMS) or (unwrapped_dim is None and p.dim() >= 1):
            key, axis = (name, "out"), 0
        else:
            key, axis = (full_name, "out"), unwrapped_dim % p.dim()
        if key not in self.couplings or p.dim() == 0:
            return float(numel), 0, 0
        f, d = self.dim(key, p.shape[axis])
        return f * numel / p.shape[axis], d, 0

    def finish(self, n_blocks: int) -> CostTables:
        width = max([len(t) for _, _, t in self.entries], default=1)
        table = np.zeros((len(self.entries), width))
        for i, (_, _, t) in enumerate(self.entries):
            table[i, : len(t)] = t
        return CostTables(
            dim_const=np.asarray(self.const),
            entry_dim=np.asarray([d for d, _, _ in self.entries], dtype=np.int64),
            entry_group=np.asarray([g for _, g, _ in self.entries], dtype=np.int64),
            entry_table=table,
            param_terms=np.asarray(self.params, dtype=np.float64).reshape(-1, 4),
            mac_terms=np.asarray(self.macs, dtype=np.float64).reshape(-1, 4),
            full_widths=np.asarray([g.channels for g in self.groups], dtype=np.int64),
            n_blocks=n_blocks,
        )


def _block_finder(block_names: list[str]) -> Callable[[str], int]:
    def block_of(name: str) -> int:
        for i, b in enumerate(block_names):
            if name == b or name.startswith(b + "."):
                return i
        return -1
    return block_of


class CostModel:
    """Exact MACs and params of an architecture given as group widths and block keep flags."""

    def __init__(self, tables: CostTables):
        self.t = tables
        self.extra_macs = 0
        self._rows = np.arange(len(tables.entry_dim))

    def dims(self, widths: np.ndarray) -> np.ndarray:
        """Size of every dim at the given group widths."""
        t = self.t
        add = t.entry_table[self._rows, widths[t.entry_group]] if len(self._rows) else np.zeros(0)
        return t.dim_const + np.bincount(t.entry_dim, weights=add, minlength=len(t.dim_const))

    def _total(self, terms: np.ndarray, dims: np.ndarray, kept: np.ndarray) -> float:
        coef = terms[:, 0]
        a, b, block = (terms[:, i].astype(np.int64) for i in (1, 2, 3))
        alive = np.ones(len(coef))
        inside = block >= 0
        if inside.any():
            alive[inside] = kept[block[inside]]
        return float(np.sum(coef * dims[a] * dims[b] * alive))

    def macs(self, widths: np.ndarray, kept: np.ndarray) -> int:
        """MACs at batch 1 (Conv2d and Linear layers, plus any fixed matrix products)."""
        return int(round(self._total(self.t.mac_terms, self.dims(widths), kept))) + self.extra_macs

    def params(self, widths: np.ndarray, kept: np.ndarray) -> int:
        """Number of parameters."""
        return int(round(self._total(self.t.param_terms, self.dims(widths), kept)))

    def calibrate_extra(self, counted_full_macs: int) -> None:
        """Count MACs outside Conv2d/Linear modules (functional matmuls) as a constant."""
        self.extra_macs = 0
        full = self.macs(self.t.full_widths, np.ones(self.t.n_blocks, dtype=bool))
        self.extra_macs = max(0, counted_full_macs - full)
        if self.extra_macs > 0.005 * counted_full_macs:
            log.warning("%d MACs (%.1f%%) come from operations outside Conv2d/Linear layers; "
                        "they are counted as fixed", self.extra_macs, 100 * self.extra_macs / counted_full_macs)


# ---------------------------------------------------------------------- metrics
class Metric(ABC):
    """A cost of an architecture that a budget may bound: its value, and its differentiable
    expected value under independent distributions over the widths and blocks (TAS)."""

    name: str  # the budget key: "macs", "params" or "latency_ms"
    space: object  # the SearchSpace it costs

    @abstractmethod
    def value_encoded(self, widths: np.ndarray, kept: np.ndarray) -> float:
        """The value at ``space.encode(arch)``."""

    def value(self, arch) -> float:
        """The value of ``arch``."""
        return self.value_encoded(*self.space.encode(arch))

    @abstractmethod
    def expectation(self, slot_groups: Sequence[int], candidates: Sequence[Sequence[int]],
                    device=None) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
        """``f(probs, keep)``: the expected value (float64 scalar tensor, differentiable in both)
        when group ``slot_groups[s]`` takes width ``candidates[s][c]`` with probability
        ``probs[s, c]`` (rows zero padded) and block ``j`` is kept with probability ``keep[j]``."""


class _ClosedForm(Metric):
    def __init__(self, space):
        self.space = space

    def expectation(self, slot_groups, candidates, device=None):
        cost = ExpectedCost(self.space, slot_groups, candidates, device)
        return lambda probs, keep=None: cost(self.name, probs, keep)


class MacsMetric(_ClosedForm):
    """MACs at the deployment input shape, in closed form."""

    name = "macs"

    def value_encoded(self, widths, kept) -> int:
        return self.space.cost.macs(widths, kept)


class ParamsMetric(_ClosedForm):
    """Number of parameters, in closed form."""

    name = "params"

    def value_encoded(self, widths, kept) -> int:
        return self.space.cost.params(widths, kept)


# ---------------------------------------------------------------------- expectations
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

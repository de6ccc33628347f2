"""Closed-form MACs and params of any architecture in a search space.

Every layer dimension that can shrink (a convolution's output channels, a linear layer's input
features, ...) is a *dim*: a constant part plus, for each channel group it follows, the number of
its channels kept at the group's width (a lookup table, exact even when a layer sees only part of
a group, as after a split, or many copies of it, as after a flatten). Every parameter tensor and
every Conv2d/Linear layer's MACs is then ``coef * dim_a * dim_b``, zero when the residual block
around it is dropped. Evaluating an architecture is a handful of vectorised numpy operations.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
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
    def from_model(cls, model: nn.Module, groups, couplings, unwrapped: dict, positions: dict, blocks) -> "CostTables":
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
        coef, a, b, block = terms[:, 0], terms[:, 1].astype(np.int64), terms[:, 2].astype(np.int64), terms[:, 3].astype(np.int64)
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

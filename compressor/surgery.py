"""Apply an architecture to a network: as masks and gates on the full network (for weight-sharing
evaluation during a search), or physically (a smaller plain ``nn.Module`` for deployment).

Both compute the same function: a masked channel is exactly zero wherever it flows, layer norms
over masked channels take their statistics from the kept channels only, and a dropped block
computes what remains of it (its trailing activation, if any) on its input.
"""
from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from torch import nn

from .architecture import Architecture
from .space import SearchSpace, dependency_graph

log = logging.getLogger(__name__)


class Masks:
    """Forward hooks that apply an architecture to the full network; ``remove()`` undoes them."""

    def __init__(self, handles: list):
        self._handles = handles

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> Masks:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _layer_masks(space: SearchSpace, arch: Architecture, model: nn.Module) -> dict[str, torch.Tensor]:
    """For every layer whose output channels follow a pruned group, a 0/1 mask over them."""
    widths, _ = space.encode(arch)
    masks: dict[str, torch.Tensor] = {}
    for (name, role), found in space.couplings.items():
        if role != "out" or name in space.unwrapped:
            continue
        mask = None
        for c in found:
            g = space.groups[c.group]
            if widths[c.group] >= g.channels:
                continue
            kept = np.zeros(g.channels, dtype=bool)
            kept[g.keep(int(widths[c.group]))] = True
            if mask is None:
                mask = torch.ones(_out_channels(model.get_submodule(name)))
            mask[torch.as_tensor(c.idxs[~kept[c.root_idxs]], dtype=torch.long)] = 0.0
        if mask is not None:
            masks[name] = mask
    return masks


def _out_channels(module: nn.Module) -> int:
    for attr in ("out_channels", "out_features", "num_features", "num_channels"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    if isinstance(module, nn.LayerNorm):
        return int(module.normalized_shape[-1])
    raise TypeError(f"cannot tell the output channels of {type(module).__name__}")


def channel_dim(module: nn.Module) -> int:
    if isinstance(module, nn.Linear) or (isinstance(module, nn.LayerNorm) and type(module).__name__ != "LayerNorm2d"):
        return -1
    return 1


def _mask_hook(mask: torch.Tensor, dim: int):
    def hook(module, inputs, output):
        shape = [1] * output.dim()
        shape[dim] = -1
        return output * mask.to(output.device, output.dtype).view(shape)
    return hook


def _masked_norm_hook(mask: torch.Tensor, dim: int):
    """LayerNorm over the kept channels only, as the pruned network computes it."""
    def hook(module, inputs, output):
        x = inputs[0]
        shape = [1] * x.dim()
        shape[dim] = -1
        m = mask.to(x.device, x.dtype).view(shape)
        n = m.sum()
        mean = (x * m).sum(dim, keepdim=True) / n
        var = (((x - mean) * m) ** 2).sum(dim, keepdim=True) / n
        y = (x - mean) / torch.sqrt(var + module.eps)
        if module.weight is not None:
            y = y * module.weight.view(shape)
        if module.bias is not None:
            y = y + module.bias.view(shape)
        return y * m
    return hook


def _drop_hook(post: nn.Module):
    def hook(module, inputs, output):
        return post(inputs[0])
    return hook


def apply_masks(space: SearchSpace, model: nn.Module, arch: Architecture) -> Masks:
    """Apply ``arch`` to ``model`` (the full network of ``space``) with forward hooks."""
    space.check(arch)
    handles = []
    for name, mask in _layer_masks(space, arch, model).items():
        module = model.get_submodule(name)
        dim = channel_dim(module)
        hook = _masked_norm_hook(mask, dim) if isinstance(module, nn.LayerNorm) else _mask_hook(mask, dim)
        handles.append(module.register_forward_hook(hook))
    for block in space.blocks:
        if not arch.blocks[block.name]:
            handles.append(model.get_submodule(block.name).register_forward_hook(_drop_hook(block.post_module())))
    return Masks(handles)


class DroppedBlock(nn.Module):
    """What a removed residual block leaves behind: its trailing activation, or nothing."""

    def __init__(self, post: nn.Module):
        super().__init__()
        self.post = post

    def forward(self, x):
        return self.post(x)


def materialize(space: SearchSpace, model: nn.Module, arch: Architecture) -> nn.Module:
    """A physically smaller copy of ``model`` with ``arch`` applied; ``model`` is left as is."""
    space.check(arch)
    small = copy.deepcopy(model).eval()
    widths, _ = space.encode(arch)
    pruned = [(g, int(w)) for g, w in zip(space.groups, widths) if w < g.channels]
    if pruned:
        graph = dependency_graph(small, torch.zeros(1, *space.input_shape))
        for g, w in pruned:
            root = small.get_submodule(g.name)
            fn = graph.get_pruner_of_module(root).prune_out_channels
            drop = sorted(int(i) for i in g.ranking[w:])
            graph.get_pruning_group(root, fn, drop).prune()
    for block in space.blocks:
        if not arch.blocks[block.name]:
            parent, _, attr = block.name.rpartition(".")
            setattr(small.get_submodule(parent) if parent else small, attr, DroppedBlock(block.post_module()))
    return small

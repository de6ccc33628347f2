"""TAS's building blocks (Dong & Yang, NeurIPS 2019; docs/ALGORITHMS.md, section tas): channel-wise
interpolation and the mixture of two widths, Gumbel sampling, and the structure of a network the
supernet hooks into (where a group's chains of layers end, which residual blocks form a stage).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..space import Coupling, SearchSpace

__all__ = ["cwi", "depth_stages", "gumbel_softmax", "gumbel_top2", "mix_channels", "terminal_layers"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


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

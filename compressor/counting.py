"""Reference counts of MACs and params on a built model (the independent path the cost model is
checked against). MACs follow docs/ALGORITHMS.md section 5.1: multiply-accumulates of
convolutions, linear layers and matrix products at batch 1; normalisation, activations, pooling
and additions are not counted."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(model: nn.Module, input_shape) -> int:
    """MACs of one forward pass at batch 1, counted by PyTorch's FLOP counter (FLOPs / 2)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())

"""Shared fixtures for the search-space, cost, surgery and checkpoint tests.

Torchvision models are built once per test session (``zoo``), with random but *non-trivial*
normalisation: batch-norm affine parameters are randomised and running statistics are calibrated
on random images, so that every layer's activations are O(1). With torchvision's default init in
eval mode many nets (MobileNet, EfficientNet) output ~1e-11, which would make an absolute parity
tolerance meaningless.

Tests here run torch with one intra-op thread (``single_thread``): on a busy two-core machine
OpenMP's spinning threads make a forward pass 20x slower with two threads than with one.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from compressor.architecture import Architecture
from compressor.models import ModelSpec, build_model
from compressor.space import SearchSpace

SMALL_SHAPE = (3, 64, 64)

# At least ten torchvision families: plain residual, grouped residual, inverted residual (v2, v3,
# EfficientNet, MnasNet), RegNet (grouped + squeeze-excite), dense concat, inception concat,
# ConvNeXt (LayerNorm + layer scale), VGG (flatten -> linear), SqueezeNet (fire concat, conv head).
ZOO = [
    "resnet18",
    "resnext50_32x4d",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "regnet_y_400mf",
    "densenet121",
    "googlenet",
    "convnext_tiny",
    "vgg11",
    "mnasnet0_5",
    "squeezenet1_0",
]
HEAVY_ZOO = ("vgg11", "densenet121")  # the slowest members to trace and run: several seconds a test each


def zoo_params(slow=HEAVY_ZOO) -> list:
    """:data:`ZOO` for ``parametrize``, the models named in ``slow`` marked ``slow`` (left out by
    ``pytest -m "not slow"``)."""
    return [pytest.param(name, marks=pytest.mark.slow) if name in slow else name for name in ZOO]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)


@pytest.fixture(scope="module")
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randomize_norms(model: nn.Module, seed: int = 0, shape=SMALL_SHAPE, batches: int = 2) -> nn.Module:
    """Random norm affine parameters and batch-norm statistics calibrated on random images."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, _NORMS) and getattr(mod, "weight", None) is not None:
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.reset_running_stats()
                mod.momentum = None  # cumulative average over the calibration batches
        model.train()
        for _ in range(batches):
            model(torch.randn(4, *shape, generator=g))
    return model.eval()


@dataclass
class ZooEntry:
    name: str
    spec: ModelSpec
    model: nn.Module
    space: SearchSpace


@pytest.fixture(scope="session")
def zoo():
    """``zoo(name)``: a torchvision model (random init, calibrated norms) and its space at 3x64x64,
    built once per session and shared read-only by the test modules."""
    cache: dict[str, ZooEntry] = {}

    def get(name: str) -> ZooEntry:
        if name not in cache:
            torch.manual_seed(0)
            spec = ModelSpec(name)
            model = randomize_norms(build_model(spec), seed=0)
            space = SearchSpace.build(model, SMALL_SHAPE, name)
            cache[name] = ZooEntry(name, spec, model, space)
        return cache[name]

    return get


def random_architecture(space: SearchSpace, seed: int, keep_prob: float = 0.5) -> Architecture:
    """Uniformly random width of every decision group, each block kept with ``keep_prob``."""
    rng = np.random.default_rng(seed)
    widths = {g.name: int(rng.choice(g.choices)) for g in space.decision_groups}
    blocks = {b.name: bool(rng.random() < keep_prob) for b in space.blocks}
    return space.architecture(widths, blocks)


def batch(seed: int = 1, shape=SMALL_SHAPE, n: int = 2) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


TINY_SHAPE = (3, 16, 16)


def tiny_cnn() -> nn.Module:
    """conv-relu-pool-linear, seeded: a model to export and time in a second."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    ).eval()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    """:func:`tiny_cnn` exported to ONNX at :data:`TINY_SHAPE`."""
    from exporters.onnx_export import export_onnx

    return export_onnx(tiny_cnn(), TINY_SHAPE, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def subprocess_env() -> dict:
    """The environment for a `compress` subprocess: one torch thread, and no torchrun variables
    inherited from a test runner that was itself launched by torchrun."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return env


def run_python(*args, **kw) -> subprocess.CompletedProcess:
    """``python ARGS`` in a subprocess with :func:`subprocess_env`, output captured."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=subprocess_env(),
                          timeout=kw.pop("timeout", 600), **kw)


def torchrun(*args, port: int, **kw) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 ARGS`` (two gloo processes on this CPU machine); ``port``
    differs per test so that runs cannot meet at one rendezvous."""
    return run_python("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), *args,
                      **kw)

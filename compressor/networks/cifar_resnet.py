"""The CIFAR-style ResNets of He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016,
section 4.2): resnet20, resnet32, resnet44, resnet56 and resnet110, for small images (32x32).

A 3x3 convolution stem with 16 channels (+ BN + ReLU); three stages of ``n`` BasicBlocks
(n = 3, 5, 7, 9, 18: depth 6n + 2) with 16, 32 and 64 channels, the first block of stages 2 and 3
with stride 2; global average pooling; a linear classifier. A BasicBlock computes
``relu(shortcut(x) + bn2(conv2(relu(bn1(conv1(x))))))``.

Shortcuts: the identity where the shape is kept, and a projection (1x1 convolution with the
block's stride + BN, the paper's "option B") where it changes (two blocks per network). The paper
used option A (zero-padded identity, no parameters) for CIFAR; option B is what Torch-Pruning's
and most pruning benchmarks' resnet56 use, and it keeps every channel a prunable tensor. It adds
2,752 parameters to the paper's counts (resnet20: 272,474 instead of 269,722).

Blocks with an identity shortcut compute ``relu(x + branch(x))`` with ``x`` itself (no module in
between), so :func:`compressor.blocks.find_residual_blocks` lists them as removable.

These are built-in networks (``compressor.models.BUILTINS``, typed as ``--model resnet56``): an
artifact names them by spec and :func:`compressor.load` rebuilds them without importing user code.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from compress_base.errors import CompressError

# depth -> BasicBlocks per stage (depth = 6n + 2)
DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}
WIDTHS = (16, 32, 64)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers and a shortcut (identity, or 1x1 conv + BN where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    """Stem, three stages of BasicBlocks (``blocks`` per stage, ``widths`` channels), pooling, classifier."""

    def __init__(self, blocks: int, num_classes: int = 10, widths: Sequence[int] = WIDTHS):
        super().__init__()
        self.conv1 = _conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin = widths[0]
        for i, width in enumerate(widths):
            stage = [BasicBlock(cin if j == 0 else width, width, 2 if i > 0 and j == 0 else 1) for j in range(blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            cin = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def cifar_resnet(depth: int, num_classes: int = 10) -> CifarResNet:
    """resnet{depth} for ``depth`` in :data:`DEPTHS` (20, 32, 44, 56, 110)."""
    if depth not in DEPTHS:
        raise CompressError(f"no CIFAR ResNet of depth {depth}: use one of {', '.join(map(str, DEPTHS))}")
    return CifarResNet(DEPTHS[depth], num_classes)


def cifar_resnet_from_spec(depth: int, num_classes: int | None, kwargs: dict, where: str = "model spec") -> CifarResNet:
    """:func:`cifar_resnet` for a model spec (``compressor.models.BUILTINS``): it takes no settings
    but the number of classes (10 when the spec gives none)."""
    if kwargs:
        raise CompressError(f"{where}: resnet{depth} takes no settings, got {sorted(kwargs)}: remove the spec's "
                            "'kwargs'")
    return cifar_resnet(depth, 10 if num_classes is None else num_classes)

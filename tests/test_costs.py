"""Closed-form MACs and params (compressor.costs through SearchSpace.macs/params).

Small nets are checked against numbers worked out by hand (the arithmetic is in the comments),
full torchvision models against the ``_ops``/``num_params`` figures in their weights' metadata
(read offline; no weights are loaded), and the closed form against the FLOP counter on the
materialized model.

Conventions (docs/ALGORITHMS.md section 5.1): a Conv2d costs C_in/groups * C_out * k*k MACs per output position, a
Linear in*out; norms, activations, pooling and additions cost nothing.
"""
from __future__ import annotations

import time

import pytest
import torch
import torchvision
from torch import nn

from compressor.counting import count_macs, count_params
from compressor.models import ModelSpec, build_model
from compressor.space import SearchSpace
from compressor.surgery import apply_masks, materialize

from conftest import max_abs_diff, randomize_norms

pytestmark = pytest.mark.usefixtures("single_thread")

HW8 = (3, 8, 8)


# --------------------------------------------------------------------------- helpers
def widths_for(space: SearchSpace, **by_layer: int) -> dict[str, int]:
    """Group widths keyed by group name, given as ``layer_name=width`` of a layer whose output
    channels the group defines (names of Sequential children are digits, so pass a dict)."""
    out = {}
    for layer, width in by_layer.items():
        (coupling,) = space.couplings[(layer, "out")]
        out[space.groups[coupling.group].name] = width
    return out


def check_built(space: SearchSpace, model: nn.Module, arch, macs: int, params: int, shape=HW8):
    """Closed form == hand number == counted on the materialized model, and masked == materialized."""
    assert space.macs(arch) == macs
    assert space.params(arch) == params
    small = materialize(space, model, arch)
    assert count_macs(small, shape) == macs
    assert count_params(small) == params
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y_small = small(x)
        with apply_masks(space, model, arch):
            y_masked = model(x)
    assert max_abs_diff(y_small, y_masked) <= 1e-5
    return small


class Block(nn.Module):
    """relu(x + bn2(conv2(relu(bn1(conv1(x))))))  -- a removable residual block."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class CatNet(nn.Module):
    """Two branches concatenated: merge's input channels follow two groups (concat coupling)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 4, 1)
        self.b = nn.Conv2d(8, 12, 3, padding=1)
        self.merge = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.cat([self.a(x), self.b(x)], dim=1)
        x = torch.relu(self.merge(x))
        return self.fc(x.mean((2, 3)))


def _prep(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for p in model.parameters():
        nn.init.normal_(p, 0, 0.5)
    return randomize_norms(model, seed, shape=HW8)


# --------------------------------------------------------------------------- hand-computed nets
def test_plain_sequential_by_hand():
    torch.manual_seed(0)
    net = _prep(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ))
    space = SearchSpace.build(net, HW8, channel_multiple=4)
    # Two groups: conv '0' (+ bn '1', conv '3' input) and conv '3' (+ linear '6' input).
    assert sorted((g.channels, g.choices) for g in space.decision_groups) == [(8, (4, 8)), (16, (4, 8, 12, 16))]
    # MACs: conv0 3*8*9 per position * 64 positions (8x8) = 13824
    #       conv3 8*16*9 * 16 positions (stride 2: 4x4)  = 18432
    #       linear 16*10                                 =   160   -> 32416
    # Params: conv0 3*8*9+8 = 224, bn 2*8 = 16, conv3 8*16*9+16 = 1168, linear 16*10+10 = 170 -> 1578
    check_built(space, net, space.full(), 3 * 8 * 9 * 64 + 8 * 16 * 9 * 16 + 16 * 10, 1578)
    # Pruned: group of conv0 at 4, group of conv3 at 8
    # MACs: 3*4*9*64 = 6912, 4*8*9*16 = 4608, 8*10 = 80 -> 11600
    # Params: 3*4*9+4 = 112, bn 8, 4*8*9+8 = 296, 8*10+10 = 90 -> 506
    arch = space.architecture(widths_for(space, **{"0": 4, "3": 8}))
    small = check_built(space, net, arch, 11600, 506)
    assert (small[0].out_channels, small[1].num_features, small[3].in_channels, small[3].out_channels,
            small[6].in_features) == (4, 4, 4, 8, 8)
    assert space.uniform(0.5) == arch
    # smallest: 3*4*9*64 = 6912 + 4*4*9*16 = 2304 + 4*10 = 40 -> 9256;
    # params 112 + 8 + (4*4*9+4 = 148) + (4*10+10 = 50) = 318
    check_built(space, net, space.smallest(), 9256, 318)
    d = space.describe()
    assert (d["macs"], d["params"], d["smallest_macs"], d["classifier"]) == (32416, 1578, 9256, "6")


def test_depthwise_by_hand():
    net = _prep(nn.Sequential(
        nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 8, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    ))
    space = SearchSpace.build(net, HW8, channel_multiple=4)
    # conv0, bn1, depthwise conv3 (in and out), bn4 and conv6's input are one group of 16.
    (c0,) = space.couplings[("0", "out")]
    (c3,) = space.couplings[("3", "out")]
    assert c0.group == c3.group and space.groups[c0.group].channels == 16
    assert not space.fixed_layers
    # MACs: pointwise 3*16*64 = 3072; depthwise 16*9*64 = 9216 (one input channel per output);
    #       pointwise 16*8*64 = 8192; linear 8*10 = 80 -> 20560
    # Params: 3*16+16 = 64, bn 32, depthwise 16*9+16 = 160, bn 32, 16*8+8 = 136, 8*10+10 = 90 -> 514
    check_built(space, net, space.full(), 3072 + 9216 + 8192 + 80, 514)
    # 16 -> 8 and 8 -> 4: 3*8*64 = 1536, 8*9*64 = 4608, 8*4*64 = 2048, 4*10 = 40 -> 8232
    # Params: 24+8 = 32, bn 16, 72+8 = 80, bn 16, 32+4 = 36, 40+10 = 50 -> 230
    arch = space.architecture(widths_for(space, **{"0": 8, "6": 4}))
    small = check_built(space, net, arch, 8232, 230)
    assert small[3].groups == small[3].in_channels == small[3].out_channels == 8


def test_residual_block_by_hand():
    net = _prep(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        Block(8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    ))
    space = SearchSpace.build(net, HW8, channel_multiple=4)
    assert [(b.name, b.post) for b in space.blocks] == [("3", "ReLU")]
    assert [d.name for d in space.decisions() if d.kind == "block"] == ["3"]
    # MACs: stem 3*8*9*64 = 13824, block conv1 8*8*9*64 = 36864, conv2 36864, linear 80 -> 87632
    # Params: stem 216+8 = 224, bn 16, conv1 576, bn1 16, conv2 576, bn2 16, linear 90 -> 1514
    full = space.full()
    check_built(space, net, full, 87632, 1514)
    # Dropping the block removes exactly its MACs (2 * 36864) and params (1184).
    dropped = space.architecture(blocks={"3": False})
    assert space.macs(full) - space.macs(dropped) == 2 * 8 * 8 * 9 * 64
    check_built(space, net, dropped, 13904, 330)
    # Inner width 4: conv1 8*4*9*64 = 18432, conv2 4*8*9*64 = 18432 -> 13824+36864+80 = 50768
    # Params: 224+16 + (288 + 8 + 288 + 16) + 90 = 930
    check_built(space, net, space.architecture(widths_for(space, **{"3.conv1": 4})), 50768, 930)
    # Stem/residual group at 4 (stem, bn, conv1 in, conv2 out, bn2, linear in):
    # 3*4*9*64 = 6912, 4*8*9*64 = 18432, 8*4*9*64 = 18432, 4*10 = 40 -> 43816
    # Params: 112 + 8 + 288 + 16 + 288 + 8 + 50 = 770
    check_built(space, net, space.architecture(widths_for(space, **{"0": 4})), 43816, 770)
    # Both, block dropped: only the stem and the head remain: 6912 + 40; params 112 + 8 + 50
    arch = space.architecture(widths_for(space, **{"0": 4, "3.conv1": 4}), {"3": False})
    check_built(space, net, arch, 6952, 170)


def test_concat_by_hand():
    net = _prep(CatNet())
    space = SearchSpace.build(net, HW8, channel_multiple=2)
    # merge's input channels follow two groups: a's 4 channels then b's 12.
    merge_in = space.couplings[("merge", "in")]
    assert sorted(len(c.idxs) for c in merge_in) == [4, 12]
    by_group = {space.groups[c.group].name: c.idxs.tolist() for c in merge_in}
    assert sorted(by_group.values()) == [list(range(4)), list(range(4, 16))]
    # Full: stem 3*8*9*64 = 13824, a 8*4*64 = 2048, b 8*12*9*64 = 55296, merge 16*16*64 = 16384,
    #       fc 16*10 = 160 -> 87712
    # Params: stem 224, a 32+4 = 36, b 864+12 = 876, merge 256+16 = 272, fc 170 -> 1578
    check_built(space, net, space.full(), 87712, 1578)
    # a -> 2, b -> 6: a 8*2*64 = 1024, b 8*6*9*64 = 27648, merge (2+6)*16*64 = 8192
    #   -> 13824 + 1024 + 27648 + 8192 + 160 = 50848
    # Params: 224 + (16+2) + (432+6) + (128+16) + 170 = 994
    arch = space.architecture(widths_for(space, a=2, b=6))
    small = check_built(space, net, arch, 50848, 994)
    assert small.merge.in_channels == 8
    # and stem -> 4, merge -> 8 too: 3*4*9*64 = 6912, 4*2*64 = 512, 4*6*9*64 = 13824, 8*8*64 = 4096,
    #   8*10 = 80 -> 25424; params 112 + 10 + 222 + 72 + 90 = 506
    arch = space.architecture(widths_for(space, stem=4, a=2, b=6, merge=8))
    check_built(space, net, arch, 25424, 506)


def test_flatten_linear_by_hand():
    net = _prep(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10),
    ))
    space = SearchSpace.build(net, HW8, channel_multiple=4)
    # Each conv channel feeds 4*4 = 16 linear inputs.
    (coupling,) = space.couplings[("4", "in")]
    assert len(coupling.idxs) == 128 and sorted(set(coupling.root_idxs.tolist())) == list(range(8))
    # Full: conv 3*8*9*64 = 13824, fc1 128*32 = 4096, fc2 32*10 = 320 -> 18240
    # Params: 224 + (4096+32) + (320+10) = 4682
    check_built(space, net, space.full(), 18240, 4682)
    # conv -> 4 (fc1 in_features = 4*4*4 = 64), fc1 -> 16:
    #   3*4*9*64 = 6912, 64*16 = 1024, 16*10 = 160 -> 8096; params 112 + 1040 + 170 = 1322
    arch = space.architecture(widths_for(space, **{"0": 4, "4": 16}))
    small = check_built(space, net, arch, 8096, 1322)
    assert small[4].in_features == 64 and small[4].out_features == 16


# --------------------------------------------------------------------------- torchvision metadata
TV_224 = ["resnet50", "mobilenet_v2", "efficientnet_b0", "densenet121", "vgg11"]


@pytest.fixture(scope="module")
def spaces_224():
    cache: dict[str, tuple[nn.Module, SearchSpace]] = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            model = build_model(ModelSpec(name)).eval()
            cache[name] = (model, SearchSpace.build(model, (3, 224, 224), name))
        return cache[name]

    yield get
    cache.clear()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "vgg11" else n for n in TV_224])
def test_full_costs_match_torchvision_meta(spaces_224, name):
    _, space = spaces_224(name)
    meta = torchvision.models.get_model_weights(name).DEFAULT.meta
    macs = space.macs(space.full())
    assert abs(macs - meta["_ops"] * 1e9) <= 0.01 * meta["_ops"] * 1e9, (macs, meta["_ops"])
    assert space.params(space.full()) == meta["num_params"]
    assert space.cost.extra_macs == 0  # all MACs are in Conv2d/Linear layers


def test_resnet50_costs_shrink_with_width(spaces_224):
    _, space = spaces_224("resnet50")
    macs = [space.macs(space.uniform(r)) for r in (0.25, 0.5, 0.75, 1.0)]
    params = [space.params(space.uniform(r)) for r in (0.25, 0.5, 0.75, 1.0)]
    assert macs == sorted(macs) and len(set(macs)) == 4
    assert params == sorted(params) and len(set(params)) == 4
    assert space.macs(space.smallest()) < macs[0]


def test_resnet50_macs_is_fast(spaces_224):
    """Spec requirement: a closed-form evaluation well under 1 ms (searchers call it constantly)."""
    _, space = spaces_224("resnet50")
    arch = space.uniform(0.5)
    best = float("inf")
    for _ in range(200):
        t0 = time.perf_counter()
        space.macs(arch)
        best = min(best, time.perf_counter() - t0)
    assert best < 1e-3, best


def test_cost_model_arrays_directly(spaces_224):
    """CostModel takes encoded arrays: the full widths and all blocks kept give the full cost."""
    _, space = spaces_224("resnet50")
    widths, kept = space.encode(space.full())
    assert widths.tolist() == [g.channels for g in space.groups]
    assert kept.all() and len(kept) == len(space.blocks)
    assert space.cost.macs(widths, kept) == space.macs(space.full())
    assert space.cost.params(widths, kept) == space.params(space.full())
    # dropping a block never increases the cost
    kept[0] = False
    assert space.cost.macs(widths, kept) < space.macs(space.full())

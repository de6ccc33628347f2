"""Contents of SearchSpace: groups, choices, blocks, ranking, fixed layers, architectures."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from compress_base.errors import CompressError
from compressor.architecture import Architecture
from compressor.models import ModelSpec, build_model
from compressor.space import SearchSpace, _choices, round_width
from compressor.surgery import materialize

from conftest import SMALL_SHAPE, ZOO

pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------- blocks
def test_resnet18_blocks(zoo):
    space = zoo("resnet18").space
    assert [(b.name, b.post) for b in space.blocks] == [
        ("layer1.0", "ReLU"), ("layer1.1", "ReLU"), ("layer2.1", "ReLU"), ("layer3.1", "ReLU"), ("layer4.1", "ReLU"),
    ]
    # downsampling blocks change the shape and are not removable
    assert all(b.name not in ("layer2.0", "layer3.0", "layer4.0") for b in space.blocks)
    assert isinstance(space.blocks[0].post_module(), nn.ReLU)


def test_mobilenet_v2_blocks(zoo):
    entry = zoo("mobilenet_v2")
    expected = [name for name, m in entry.model.named_modules()
                if type(m).__name__ == "InvertedResidual" and m.use_res_connect]
    assert len(expected) == 10
    assert [b.name for b in entry.space.blocks] == expected
    assert all(b.post is None for b in entry.space.blocks)
    assert isinstance(entry.space.blocks[0].post_module(), nn.Identity)


@pytest.mark.slow
def test_blocks_without_residual(zoo):
    for name in ("vgg11", "densenet121", "googlenet", "squeezenet1_0"):
        assert zoo(name).space.blocks == []


# --------------------------------------------------------------------------- groups and choices
def test_classifier_is_never_a_decision(zoo):
    space = zoo("resnet18").space
    assert space.classifier == "fc"
    assert ("fc", "out") not in space.couplings
    assert ("fc", "in") in space.couplings  # its inputs do shrink with the last group
    assert all(g.name != "fc" for g in space.groups)
    assert all(d.name != "fc" for d in space.decisions())
    assert space.fingerprint["num_classes"] == 1000


@pytest.mark.parametrize("name", ZOO)
def test_choices_are_aligned(zoo, name):
    space = zoo(name).space
    multiple = space.fingerprint["channel_multiple"]
    assert multiple == 8
    assert space.decision_groups, "every model in the zoo has something to prune"
    for g in space.groups:
        c = list(g.choices)
        assert c == sorted(set(c)), g.name
        assert c[0] > 0 and c[-1] == g.channels
        assert all(w % multiple == 0 for w in c[:-1]), (g.name, c)
        assert c[0] >= g.channels * space.fingerprint["min_ratio"] - 1e-9
        # ranking is a permutation of the group's channels; importance sums to 1, non-increasing
        assert sorted(g.ranking.tolist()) == list(range(g.channels))
        assert np.isclose(g.importance.sum(), 1.0) and np.all(np.diff(g.importance) <= 1e-12)
        if g.fixed_reason:  # grouped convolutions and the like: one choice, the original width
            assert c == [g.channels]
    # the classifier's outputs are never pruned
    assert (space.classifier, "out") not in space.couplings
    decisions = space.decisions()
    assert [d.name for d in decisions if d.kind == "width"] == [g.name for g in space.decision_groups]
    assert all(d.choices == (False, True) for d in decisions if d.kind == "block")


@pytest.mark.parametrize(
    "channels, multiple, min_ratio, expected",
    [
        (64, 8, 0.1, (8, 16, 24, 32, 40, 48, 56, 64)),
        (64, 8, 0.3, (24, 32, 40, 48, 56, 64)),
        (20, 8, 0.1, (8, 16, 20)),
        (6, 8, 0.1, (6,)),  # fewer channels than the multiple: fixed
        (8, 8, 0.1, (8,)),
        (10, 1, 0.25, (3, 4, 5, 6, 7, 8, 9, 10)),
    ],
)
def test_choices_grid(channels, multiple, min_ratio, expected):
    assert _choices(channels, multiple, min_ratio) == expected


def test_round_width():
    choices = (8, 16, 24, 32)
    assert round_width(32, 0.5, choices) == 16
    assert round_width(32, 0.0, choices) == 8
    assert round_width(32, 0.625, choices) == 24  # tie 20 between 16 and 24 goes to the wider
    assert round_width(32, 2.0, choices) == 32


def test_channel_multiple_changes_choices():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(24, 5))
    s8 = SearchSpace.build(net, (3, 8, 8), channel_multiple=8)
    s4 = SearchSpace.build(net, (3, 8, 8), channel_multiple=4, min_ratio=0.5)
    assert s8.groups[0].choices == (8, 16, 24)
    assert s4.groups[0].choices == (12, 16, 20, 24)
    assert s4.fingerprint["channel_multiple"] == 4 and s4.fingerprint["min_ratio"] == 0.5


def test_ranking_keeps_most_important_channels():
    """Channel importance is the group's L1 norm: set it and check which channels survive."""
    net = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.ReLU(), nn.Conv2d(8, 4, 1, bias=False),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    scale = torch.tensor([3.0, 8.0, 1.0, 6.0, 2.0, 7.0, 4.0, 5.0])  # channel i's importance
    with torch.no_grad():
        net[0].weight.copy_(scale.view(8, 1, 1, 1).expand(8, 3, 1, 1) * torch.tensor([1.0, -1.0, 0.5]).view(1, 3, 1, 1))
        net[2].weight.copy_(scale.view(1, 8, 1, 1).expand(4, 8, 1, 1) * 0.1)
    space = SearchSpace.build(net, (3, 4, 4), channel_multiple=2)
    (coupling,) = space.couplings[("0", "out")]
    group = space.groups[coupling.group]
    assert group.ranking.tolist() == [1, 5, 3, 7, 6, 0, 4, 2]
    assert np.allclose(group.importance, np.sort(scale.numpy())[::-1] / scale.sum().item())
    arch = space.architecture({group.name: 4})
    small = materialize(space, net, arch)
    kept = sorted([1, 5, 3, 7])  # Torch-Pruning keeps the survivors in their original order
    assert torch.equal(small[0].weight, net[0].weight[kept])
    assert torch.equal(small[2].weight, net[2].weight[:, kept])
    # the small net computes the big one with only those channels
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        h = torch.relu(torch.nn.functional.conv2d(x, net[0].weight[kept]))
        h = torch.nn.functional.conv2d(h, net[2].weight[:, kept]).mean((2, 3))
        assert torch.allclose(small(x), net[5](h), atol=1e-6)


# --------------------------------------------------------------------------- fixed layers
def test_resnext_grouped_convs_are_fixed(zoo):
    space = zoo("resnext50_32x4d").space
    grouped = [e for e in space.fixed_layers if "grouped convolution" in e["reason"]]
    assert grouped
    fixed_members = {layer for e in grouped for layer in e["layers"]}
    assert {"layer1.0.conv2", "layer4.2.conv2", "layer1.0.conv1"} <= fixed_members
    decided = {m for g in space.decision_groups for m in g.members}
    assert not decided & {"layer1.0.conv2", "layer4.2.conv2"}
    for g in space.groups:
        if g.fixed_reason:
            assert g.choices == (g.channels,) and not g.is_decision
    # the residual-stream groups (stem and downsample convs) are still decisions
    assert len(space.decision_groups) == 5


def test_untraceable_model_builds_with_everything_fixed():
    torch.manual_seed(0)
    model = build_model(ModelSpec("shufflenet_v2_x0_5")).eval()
    space = SearchSpace.build(model, SMALL_SHAPE, "shufflenet_v2_x0_5")
    assert space.decision_groups == [] and space.groups == []
    assert space.fixed_layers[0]["layers"] == ["*"]
    assert "Torch-Pruning" in space.fixed_layers[0]["reason"]
    # the costs still work: the full model's MACs and params are counted
    from compressor.counting import count_macs, count_params

    assert space.macs(space.full()) == count_macs(model, SMALL_SHAPE)
    assert space.params(space.full()) == count_params(model)
    assert space.full() == space.smallest()
    assert space.describe()["fixed_layers"] == space.fixed_layers


# --------------------------------------------------------------------------- architectures
def test_full_smallest_uniform(zoo):
    space = zoo("mobilenet_v2").space
    full, small = space.full(), space.smallest()
    for g in space.decision_groups:
        assert full.widths[g.name] == g.channels
        assert small.widths[g.name] == g.choices[0]
    assert set(full.widths) == {g.name for g in space.decision_groups}
    assert all(full.blocks.values()) and not any(small.blocks.values())
    half = space.uniform(0.5)
    assert all(half.blocks.values())
    for g in space.decision_groups:
        assert half.widths[g.name] in g.choices
        assert abs(half.widths[g.name] - g.channels / 2) <= 4 + 1e-9 or half.widths[g.name] == g.choices[0]
    assert space.uniform(1.0) == full
    assert space.macs(small) < space.macs(half) < space.macs(full)
    assert space.params(small) < space.params(half) < space.params(full)
    for arch in (full, small, half):
        space.check(arch)


def test_encode(zoo):
    space = zoo("resnet18").space
    g = space.decision_groups[0]
    arch = space.architecture({g.name: g.choices[0]}, {"layer2.1": False})
    widths, kept = space.encode(arch)
    assert widths.dtype == np.int64 and kept.dtype == bool
    assert widths[space.groups.index(g)] == g.choices[0]
    assert [int(w) for i, w in enumerate(widths) if i != space.groups.index(g)] == \
        [gr.channels for gr in space.groups if gr is not g]
    assert kept.tolist() == [b.name != "layer2.1" for b in space.blocks]


def test_check_rejects_foreign_architectures(zoo):
    space = zoo("resnet18").space
    good = space.uniform(0.5)
    space.check(good)
    other = Architecture(good.widths, good.blocks, dict(good.fingerprint, model="resnet34"))
    with pytest.raises(CompressError, match="model"):
        space.check(other)
    with pytest.raises(CompressError, match="input_shape"):
        space.check(Architecture(good.widths, good.blocks, dict(good.fingerprint, input_shape=[3, 224, 224])))
    with pytest.raises(CompressError, match="num_classes"):
        space.check(Architecture(good.widths, good.blocks, dict(good.fingerprint, num_classes=10)))
    g = space.decision_groups[0]
    with pytest.raises(CompressError, match=g.name):
        space.check(space.architecture({g.name: g.choices[0] + 1}))
    with pytest.raises(CompressError, match="decisions"):
        space.check(space.architecture(blocks={"layer9.9": False}))
    missing = space.full()
    del missing.widths[g.name]
    with pytest.raises(CompressError, match="decisions"):
        space.check(missing)
    # mobilenet's architecture does not belong to resnet18's space even with the name faked
    mb = zoo("mobilenet_v2").space.full()
    with pytest.raises(CompressError):
        space.check(Architecture(mb.widths, mb.blocks, dict(space.fingerprint)))


def test_architecture_json_round_trip(zoo, tmp_path):
    space = zoo("resnet18").space
    g = space.decision_groups[1]
    arch = space.architecture({g.name: g.choices[1]}, {"layer3.1": False})
    path = arch.save(tmp_path / "arch.json")
    data = json.loads(path.read_text())
    assert data["format"] == 1 and data["fingerprint"]["model"] == "resnet18"
    back = Architecture.load(path)
    assert back == arch and back.fingerprint == arch.fingerprint
    space.check(back)
    assert space.macs(back) == space.macs(arch)
    (tmp_path / "bad.json").write_text('{"format": 1, "widths": 3}')
    with pytest.raises(CompressError):
        Architecture.load(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(CompressError):
        Architecture.load(tmp_path / "broken.json")


def test_describe(zoo):
    space = zoo("resnet18").space
    d = space.describe()
    json.dumps(d)  # plain data
    assert d["fingerprint"]["model"] == "resnet18" and d["fingerprint"]["input_shape"] == [3, 64, 64]
    assert d["macs"] == space.macs(space.full()) and d["params"] == space.params(space.full())
    assert d["smallest_macs"] == space.macs(space.smallest())
    assert [b["after_drop"] for b in d["blocks"]] == ["ReLU"] * 5
    assert len(d["groups"]) == len(space.groups)
    by_name = {g.name: g for g in space.groups}
    for row in d["groups"]:
        g = by_name[row["name"]]
        assert row["choices"] == [g.choices[0], g.choices[-1], len(g.choices)] and row["fixed"] is None
        assert row["name"] in row["layers"] and row["members"] == len(g.members)


def test_describe_lists_groups_in_model_order(zoo):
    """Forward order of each group's first layer (Torch-Pruning finds them last layer first), each
    group with the layers whose output channels it sets."""
    rows = zoo("resnet18").space.describe()["groups"]
    assert [r["layers"] for r in rows[:5]] == [
        ["conv1", "layer1.0.conv2", "layer1.1.conv2"], ["layer1.0.conv1"], ["layer1.1.conv1"], ["layer2.0.conv1"],
        ["layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"],
    ]
    assert rows[-1]["layers"] == ["layer4.1.conv1"] and len(rows) == 12


# --------------------------------------------------------------------------- --keep
def _shapes(model: nn.Module) -> dict[str, tuple]:
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


def test_keep_leaves_the_named_layers_untouched(zoo):
    """After materializing the smallest architecture, every kept layer has the original's weight
    shapes (in and out channels) while the rest did shrink; a block holding a kept layer stays."""
    entry = zoo("resnet18")
    space = SearchSpace.build(entry.model, SMALL_SHAPE, "resnet18", keep=["layer4.*", "conv1"])
    small = materialize(space, entry.model, space.smallest())
    before, after = _shapes(entry.model), _shapes(small)
    kept = [n for n in before if n.startswith(("layer4.", "conv1."))]
    assert len(kept) == 16 and all(after[n] == before[n] for n in kept)
    assert after["layer2.0.conv1.weight"][0] < before["layer2.0.conv1.weight"][0]  # the rest is pruned
    assert after["layer3.0.conv1.weight"][0] < before["layer3.0.conv1.weight"][0]
    assert "layer4.1" not in {b.name for b in space.blocks} and "layer3.1" in {b.name for b in space.blocks}
    assert {"layers": ["layer4.1"], "reason": "kept (--keep layer4.*): the residual block stays"} in space.fixed_layers
    reasons = {g.layers[0]: g.fixed_reason for g in space.groups if g.fixed_reason}
    assert reasons == {
        "conv1": "kept (--keep conv1)",
        "layer4.0.conv1": "kept (--keep layer4.*)", "layer4.0.conv2": "kept (--keep layer4.*)",
        "layer4.1.conv1": "kept (--keep layer4.*)",
        "layer3.0.conv2": "kept (--keep layer4.*: input of layer4.0.conv1)",  # layer3's output, read by layer4
    }
    assert all(not g.is_decision for g in space.groups if g.fixed_reason)
    assert len(space.decision_groups) == 12 - 5
    rows = {r["layers"][0]: r["fixed"] for r in space.describe()["groups"]}
    assert {n: f for n, f in rows.items() if f} == reasons
    assert space.fingerprint["keep"] == ["layer4.*", "conv1"] and "keep" not in entry.space.fingerprint


def test_keep_a_container_keeps_all_inside_and_its_block(zoo):
    entry = zoo("resnet18")
    space = SearchSpace.build(entry.model, SMALL_SHAPE, "resnet18", keep=["layer1.1"])
    assert [b.name for b in space.blocks] == ["layer1.0", "layer2.1", "layer3.1", "layer4.1"]
    fixed = {g.name for g in space.groups if not g.is_decision}
    assert {g.name for g in space.groups if "layer1.1.conv1" in g.layers or "conv1" in g.layers} == fixed


@pytest.mark.parametrize("pattern", ["layer9.*", "Layer4.*", "conv"])
def test_keep_pattern_matching_nothing_is_one_line(zoo, pattern):
    with pytest.raises(CompressError) as info:
        SearchSpace.build(zoo("resnet18").model, SMALL_SHAPE, "resnet18", keep=["layer4.*", pattern])
    msg = str(info.value)
    assert msg.startswith(f"--keep {pattern!r} matches no layer of resnet18") and "\n" not in msg
    assert "layer1.*" in msg  # says what a pattern looks like


def test_keep_survives_save_and_load(tmp_path):
    """arch.json records the patterns, so compressor.load rebuilds the same space."""
    from compressor.artifact import load, save

    spec = ModelSpec("resnet18", num_classes=10)
    model = build_model(spec).eval()
    space = SearchSpace.build(model, SMALL_SHAPE, "resnet18", keep=["layer4.*"])
    small = materialize(space, model, space.smallest())
    save(small, space.smallest(), spec, tmp_path)
    loaded = load(tmp_path)
    assert _shapes(loaded) == _shapes(small)
    x = torch.randn(1, *SMALL_SHAPE)
    with torch.no_grad():
        assert torch.allclose(loaded(x), small(x), atol=1e-5)


def test_model_that_does_not_run_at_the_shape():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    with pytest.raises(CompressError, match="input"):
        SearchSpace.build(net, (3, 16, 16))

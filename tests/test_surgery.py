"""compressor.surgery: masked full network == materialized small network, and the closed-form
costs == the costs counted on the materialized network, on random architectures of many
torchvision families (random widths and random block drops, seeded)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compressor.counting import count_macs, count_params
from compressor.space import SearchSpace
from compressor.surgery import DroppedBlock, apply_masks, materialize

from conftest import SMALL_SHAPE, batch, max_abs_diff, random_architecture, zoo_params

pytestmark = pytest.mark.usefixtures("single_thread")

SEEDS = (0, 1)


def _outputs(space, model, arch, x):
    small = materialize(space, model, arch)
    with torch.no_grad():
        y_small = small(x)
        with apply_masks(space, model, arch):
            y_masked = model(x)
    return small, y_small, y_masked


def _assert_parity(y_small, y_masked):
    diff = max_abs_diff(y_small, y_masked)
    scale = float(y_small.abs().max())
    assert diff <= 1e-4, diff
    assert diff <= 1e-4 * scale, (diff, scale)  # relative too: outputs are O(1) after calibration


@pytest.fixture(scope="module")
def full_outputs(zoo):
    cache = {}

    def get(name):
        if name not in cache:
            with torch.no_grad():
                cache[name] = zoo(name).model(batch())
        return cache[name]

    return get


@pytest.mark.parametrize("name", zoo_params())
def test_random_architectures(zoo, full_outputs, name):
    entry = zoo(name)
    space, model = entry.space, entry.model
    x = batch()
    y_full = full_outputs(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for seed in SEEDS:
        arch = random_architecture(space, seed)
        assert arch != space.full()
        small, y_small, y_masked = _outputs(space, model, arch, x)
        # closed form == counted on the built model
        macs, params = count_macs(small, SMALL_SHAPE), count_params(small)
        assert space.macs(arch) == macs
        assert space.params(arch) == params
        assert macs < space.macs(space.full())
        _assert_parity(y_small, y_masked)
        # the architecture changed the function (else the parity check would be vacuous)
        assert max_abs_diff(y_small, y_full) > 1e-3 * float(y_full.abs().max())
        # dropped blocks are gone from the small model
        for b in space.blocks:
            if not arch.blocks[b.name]:
                assert isinstance(small.get_submodule(b.name), DroppedBlock)
    # neither materialize nor the masks touched the full model
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(model(x), y_full)  # hooks removed


@pytest.mark.parametrize(
    "name",
    ["resnet18", "mobilenet_v2", "efficientnet_b0",
     "convnext_tiny"],
)
def test_smallest_architecture(zoo, name):
    entry = zoo(name)
    space, model = entry.space, entry.model
    arch = space.smallest()
    small, y_small, y_masked = _outputs(space, model, arch, batch())
    assert space.macs(arch) == count_macs(small, SMALL_SHAPE)
    assert space.params(arch) == count_params(small)
    _assert_parity(y_small, y_masked)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "convnext_tiny", "efficientnet_b0"])
def test_all_blocks_dropped(zoo, name):
    entry = zoo(name)
    space, model = entry.space, entry.model
    arch = space.architecture(blocks={b.name: False for b in space.blocks})
    small, y_small, y_masked = _outputs(space, model, arch, batch())
    assert space.macs(arch) == count_macs(small, SMALL_SHAPE)
    assert space.params(arch) == count_params(small)
    _assert_parity(y_small, y_masked)
    # dropping every block removes exactly the blocks' own parameters
    block_params = sum(p.numel() for b in space.blocks for p in model.get_submodule(b.name).parameters())
    assert space.params(space.full()) - space.params(arch) == block_params
    assert space.macs(space.smallest()) < space.macs(arch) < space.macs(space.full())


def test_layernorm_keeps_the_channels_of_its_group():
    from torchvision.models.convnext import LayerNorm2d

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 192, 1), LayerNorm2d(192), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(192, 10)).eval()
    with torch.no_grad():
        # distinct magnitudes, the largest spread over all 192 channels (channel i gets 1 + (37 i mod 192))
        order = (torch.arange(192) * 37) % 192
        net[1].weight.copy_(order.float() + 1)
        net[1].bias.copy_(-order.float())
    space = SearchSpace.build(net, (3, 4, 4))
    (group,) = space.decision_groups
    arch = space.architecture({group.name: 24})
    small = materialize(space, net, arch)
    kept = torch.as_tensor(sorted(group.keep(24).tolist()))
    assert torch.equal(small[0].weight, net[0].weight[kept])  # the conv keeps them in order
    assert torch.equal(small[1].weight, net[1].weight[kept])  # so must the norm
    assert torch.equal(small[1].bias, net[1].bias[kept])
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        with apply_masks(space, net, arch):
            y_masked = net(x)
        assert max_abs_diff(small(x), y_masked) <= 1e-5


def test_full_architecture_is_the_identity(zoo):
    entry = zoo("resnet18")
    x = batch()
    small, y_small, y_masked = _outputs(entry.space, entry.model, entry.space.full(), x)
    with torch.no_grad():
        y = entry.model(x)
    assert torch.equal(y_masked, y)
    assert max_abs_diff(y_small, y) <= 1e-6
    assert count_params(small) == count_params(entry.model)


def test_masks_context_manager_and_remove(zoo):
    entry = zoo("mobilenet_v2")
    space, model = entry.space, entry.model
    x = batch()
    with torch.no_grad():
        y = model(x)
        arch = space.uniform(0.5)
        masks = apply_masks(space, model, arch)
        y_half = model(x)
        masks.remove()
        masks.remove()  # idempotent
        assert torch.equal(model(x), y)
        with apply_masks(space, model, arch):
            assert torch.equal(model(x), y_half)
        assert torch.equal(model(x), y)
    assert not torch.allclose(y_half, y)


def test_apply_masks_checks_the_architecture(zoo):
    from compress_base.errors import CompressError
    from compressor.architecture import Architecture

    entry = zoo("resnet18")
    space = entry.space
    bad = Architecture(space.full().widths, space.full().blocks, dict(space.fingerprint, model="vgg11"))
    with pytest.raises(CompressError):
        apply_masks(space, entry.model, bad)
    with pytest.raises(CompressError):
        materialize(space, entry.model, bad)


def test_materialized_model_trains(zoo):
    """The small model is a plain module: gradients flow and a step changes its output."""
    entry = zoo("resnet18")
    small = materialize(entry.space, entry.model, random_architecture(entry.space, 3))
    small.train()
    opt = torch.optim.SGD(small.parameters(), lr=0.1)
    x = batch(n=4)
    loss = F.cross_entropy(small(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in small.parameters() if p.requires_grad)
    opt.step()
    assert F.cross_entropy(small(x), torch.tensor([0, 1, 2, 3])).item() != loss.item()


# --------------------------------------------------------------------------- dropped blocks
class LeakyBlock(nn.Module):
    """leaky_relu(x + conv(x), 0.2): dropping it must leave LeakyReLU(0.2) applied to x."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x):
        return self.act(x + self.conv(x))


def _leaky_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), LeakyBlock(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10)).eval()


def test_dropped_block_keeps_its_activation_masked_and_materialized_agree():
    net = _leaky_net()
    space = SearchSpace.build(net, (3, 8, 8), channel_multiple=4)
    assert [(b.name, b.post) for b in space.blocks] == [("1", "LeakyReLU")]
    arch = space.architecture(blocks={"1": False})
    small, y_small, y_masked = _outputs(space, net, arch, torch.randn(2, 3, 8, 8))
    assert max_abs_diff(y_small, y_masked) <= 1e-6
    assert space.macs(arch) == count_macs(small, (3, 8, 8))


def test_dropped_block_keeps_activation_arguments():
    net = _leaky_net()
    space = SearchSpace.build(net, (3, 8, 8), channel_multiple=4)
    arch = space.architecture(blocks={"1": False})
    small = materialize(space, net, arch)
    h = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(small[1](h), F.leaky_relu(h, 0.2))
        with apply_masks(space, net, arch):
            assert torch.allclose(net[1](h), F.leaky_relu(h, 0.2))


def test_non_residual_add_is_not_a_block():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(4, 4, 1)
            self.b = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.a(x) + self.b(x)  # no identity path: removing it is not "keep the input"

    net = nn.Sequential(nn.Conv2d(3, 4, 1), TwoInputs(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    space = SearchSpace.build(copy.deepcopy(net), (3, 4, 4))
    assert space.blocks == []

"""compressor.search.scoring and greedy's measured moves: batch norm recalibrated under masks holds
the statistics of the kept channels (and equals recalibrating the materialized network), the loss
tells a harmless cut from a harmful one, and greedy commits the harmless one."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from compressor.budget import Budget
from compressor.search.base import SearchContext
from compressor.search.greedy import GreedyOptions, GreedySearcher, refine, repair, shrink_by_loss
from compressor.search.scoring import LossScorer, recalibrated_batchnorm
from compressor.space import SearchSpace
from compressor.surgery import apply_masks, materialize

pytestmark = pytest.mark.usefixtures("single_thread")
SHAPE = (3, 8, 8)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():  # statistics that do not fit the data: recalibration must replace them
        for bn in (net[1], net[4]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    return net.eval()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def test_recalibration_holds_the_kept_channels_statistics_and_matches_the_materialized_network():
    net = _net()
    space = SearchSpace.build(net, SHAPE, channel_multiple=4)
    arch = space.architecture({"0": 8})
    calibration, x = [_images(32, 1)], _images(4, 2)
    before = copy.deepcopy(net.state_dict())
    seen = {}
    handle = net[3].register_forward_hook(lambda m, i, out: seen.update(conv2=out.detach().clone()))
    with apply_masks(space, net, arch), recalibrated_batchnorm(net, calibration):
        handle.remove()
        bn2 = net[4]
        kept = seen["conv2"]  # conv2's output over the one calibration batch, after conv1 lost 8 channels
        assert torch.allclose(bn2.running_mean, kept.mean((0, 2, 3)), atol=1e-5)
        assert torch.allclose(bn2.running_var, kept.var((0, 2, 3), unbiased=True), atol=1e-4)
        with torch.no_grad():
            masked = net(x)
    small = materialize(space, net, arch)
    with recalibrated_batchnorm(small, calibration), torch.no_grad():
        assert torch.allclose(small(x), masked, atol=1e-4)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the statistics were not restored"
    assert not net.training and net[4].momentum == 0.1


def _harmless_and_harmful():
    """A network whose last 8 channels of conv2 reach the classifier with zero weight (cutting them
    is harmless) while every channel of conv1 feeds conv2 (cutting 8 is harmful)."""
    net = _net()
    with torch.no_grad():
        net[8].weight[:, 8:] = 0.0
        net[8].weight *= 20.0  # confident predictions: a harmful cut shows in the loss
        net[3].weight[8:] *= 3.0  # large weights: by L1 norms, cutting them loses most of the group
        net[0].weight[8:] *= 0.01  # small weights, which batch norm scales back up: by L1 norms, a cheap cut
    data = TensorDataset(_images(256, 3), torch.zeros(256, dtype=torch.long))
    with recalibrated_batchnorm(net, [data.tensors[0][:128]]):  # statistics that fit the data, kept
        stats = copy.deepcopy({k: v for k, v in net.state_dict().items() if "running" in k})
    net.load_state_dict(stats, strict=False)
    space = SearchSpace.build(net, SHAPE, channel_multiple=4)
    # the kept channels of conv2 at width 8 must be its zero-weight ones for the cut to be harmless
    space.groups[[g.name for g in space.groups].index("3")].ranking[:] = list(range(16))
    return net, space, data


def test_the_loss_tells_a_harmless_cut_from_a_harmful_one():
    net, space, data = _harmless_and_harmful()
    scorer = LossScorer.from_data(space, net, data, 128, seed=0)
    full = scorer.loss(space.full())
    harmless = scorer.loss(space.architecture({"3": 8}))
    harmful = scorer.loss(space.architecture({"0": 8}))
    assert full < 1e-3 and abs(harmless - full) < 1e-5
    assert harmful > full + 1e-3


def test_greedy_commits_the_harmless_cut_where_weight_norms_take_the_harmful_one():
    net, space, data = _harmless_and_harmful()
    budget = Budget(macs=space.macs(space.architecture({"3": 8})))
    assert repair(space, budget, space.full()).architecture.widths == {"0": 8, "3": 16}  # the old greedy's choice
    result = shrink_by_loss(space, budget, LossScorer.from_data(space, net, data, 128, seed=0), step=0.05)
    assert result.architecture.widths["3"] == 8 and result.architecture.widths["0"] == 16
    assert all("loss" in step for step in result.history)
    searched = GreedySearcher(space, budget, SearchContext(model=net, val_data=data),
                              GreedySearcher.Options(images=128, screen=32, finalists=1)).search()
    assert searched.architecture.widths == result.architecture.widths  # the screen passes the same move on


def test_refine_widens_back_the_cut_that_costs_loss_where_weight_norms_widen_the_other():
    # TAS and ASNG end with refine: from an architecture with both groups cut and room to widen one
    net, space, data = _harmless_and_harmful()
    start = space.architecture({"0": 8, "3": 8})
    budget = Budget(macs=space.macs(space.architecture({"3": 8})))
    assert not budget.fits(space, space.architecture({"0": 16, "3": 16}))  # room for one group only
    by_norms = refine(space, budget, start, SearchContext(model=net, val_data=data), GreedyOptions(images=0))
    by_loss = refine(space, budget, start, SearchContext(model=net, val_data=data), GreedyOptions(images=128))
    assert by_norms.architecture.widths == {"0": 8, "3": 16}
    assert by_loss.architecture.widths == {"0": 16, "3": 8} and budget.fits(space, by_loss.architecture)
    over = refine(space, budget, space.full(), SearchContext(model=net, val_data=data), GreedyOptions(images=128))
    assert over.architecture.widths == {"0": 16, "3": 8}  # over the budget: shrunk by the harmless cut


def test_a_search_scores_on_held_out_training_images_never_on_the_validation_set():
    from compressor.stages.search import HELD_OUT_IMAGES, held_out_split

    train = TensorDataset(torch.arange(1000.0), torch.zeros(1000))
    fit, held = held_out_split(train, seed=3)
    assert len(held) == 100 and len(fit) == 900  # a tenth
    assert not set(fit.indices) & set(held.indices) and set(fit.indices) | set(held.indices) == set(range(1000))
    assert held_out_split(train, seed=3)[1].indices == held.indices != held_out_split(train, seed=4)[1].indices
    big = TensorDataset(torch.zeros(10 * HELD_OUT_IMAGES + 10))
    assert len(held_out_split(big, seed=0)[1]) == HELD_OUT_IMAGES


def test_refine_restores_the_dropped_block_that_costs_loss_when_the_budget_has_room():
    from compressor.networks.cifar_resnet import cifar_resnet

    torch.manual_seed(0)
    net = cifar_resnet(20).eval()
    with torch.no_grad():  # layer1.2's branch adds nothing: dropping it is harmless, layer1.1's is not
        net.get_submodule("layer1.2").bn2.weight.zero_()
        net.get_submodule("layer1.2").bn2.bias.zero_()
    space = SearchSpace.build(net, (3, 32, 32))
    data = TensorDataset(torch.randn(128, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
                         torch.zeros(128, dtype=torch.long))
    context, options = SearchContext(model=net, val_data=data), GreedyOptions(images=64, screen=0)
    full = space.full()
    both = space.architecture(full.widths, {**full.blocks, "layer1.1": False, "layer1.2": False})
    one = space.architecture(full.widths, {**full.blocks, "layer1.2": False})
    room_for_one = Budget(macs=space.macs(one))
    assert space.macs(both) < space.macs(one) == space.macs(space.architecture(full.widths, {
        **full.blocks, "layer1.1": False}))  # the two blocks cost the same
    result = refine(space, room_for_one, both, context, options)
    assert result.architecture.blocks == one.blocks
    assert [(h["move"], h["name"]) for h in result.history] == [("restore", "layer1.1")]
    assert refine(space, Budget(macs=space.macs(full)), both, context, options).architecture == full


@pytest.mark.parametrize("images", [0, 64])
def test_refine_leaves_the_models_mode_as_it_found_it(images):
    net, space, data = _harmless_and_harmful()
    net.train()
    refine(space, Budget(macs=space.macs(space.architecture({"3": 8}))), space.full(),
           SearchContext(model=net, val_data=data), GreedyOptions(images=images))
    assert net.training

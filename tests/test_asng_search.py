"""compressor.search.asng_search: ASNG-NAS over widths and blocks with a budget penalty.

Small and fast: torchvision models with 10 classes at 3x32x32 and a tiny residual CNN, a few
hundred digits images, one or two short epochs (``steps_per_epoch``), one torch thread.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from compress_base.errors import CompressError
from compressor.budget import Budget
from compressor.data import load_data
from compressor.models import ModelSpec, build_model
from compressor.search.asng import ranking_utility
from compressor.search.asng_search import ASNGOptions, asng_search, batch_stat_eval, penalized_loss
from compressor.search.base import SearchContext
from compressor.space import ChannelGroup, SearchSpace

pytestmark = pytest.mark.usefixtures("single_thread")

SHAPE = (3, 32, 32)
RECORD_KEYS = {"epoch", "steps", "weight_loss", "arch_loss", "penalized_loss", "over_budget", "updates",
               "convergence", "step_size", "Delta", "lr", "argmax", "argmax_excess", "converged", "seconds"}


class TinyResNet(nn.Module):
    """conv-bn-relu stem, one removable residual block, pooling, a linear head."""

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block = _Residual(width)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


class _Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


@pytest.fixture(scope="module")
def digits():
    data = load_data(resolution=32, seed=0)
    return Subset(data.train, list(range(192)))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = TinyResNet().eval()
    space = SearchSpace.build(model, SHAPE, "tiny")
    return model, space


def _torchvision(name):
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, 10)).eval()
    return model, SearchSpace.build(model, SHAPE, name)


def _context(model, data, epochs=1, seed=0, **options):
    options.setdefault("steps_per_epoch", 2)
    options.setdefault("refine_images", 0)  # the final moves by weight norms, fast; test_scoring.py: by loss
    return SearchContext(model=model, train_data=data, batch_size=16, epochs=epochs, seed=seed, quiet=True,
                         options=options)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- plain pieces
def test_penalized_loss_hand_numbers():
    assert penalized_loss(2.0, 0.9, 10.0) == 2.0  # within budget: the loss alone
    assert penalized_loss(2.0, 1.0, 10.0) == 2.0  # exactly at the budget
    assert math.isclose(penalized_loss(1.5, 1.2, 10.0), 1.5 + 10.0 * 0.2)  # 20 % over: +2
    assert math.isclose(penalized_loss(1.5, 1.05, 10.0), 2.0)  # 5 % over: +0.5
    assert penalized_loss(1.5, 1.2, 0.0) == 1.5  # no penalty
    assert math.isnan(penalized_loss(float("nan"), 1.2, 10.0))


def test_penalty_makes_over_budget_samples_rank_worse():
    # the over-budget sample has the lower loss, but loses the ranking once penalised
    raw = [1.5, 2.0]  # losses of (over budget by 20 %, within budget)
    excess = [1.2, 0.8]
    assert ranking_utility(raw).tolist() == [1.0, -1.0]
    pen = [penalized_loss(f, e, ASNGOptions().penalty) for f, e in zip(raw, excess)]
    assert np.allclose(pen, [3.5, 2.0])
    assert ranking_utility(pen).tolist() == [-1.0, 1.0]
    # two over-budget samples of equal loss: the one closer to the budget wins
    pen = [penalized_loss(2.0, e, 10.0) for e in (1.5, 1.1)]
    assert ranking_utility(pen).tolist() == [-1.0, 1.0]


def test_candidate_widths():
    g = ChannelGroup("g", 64, tuple(range(8, 65, 8)), np.arange(64), np.full(64, 1 / 64), ["g"])
    # targets 6.4 12.8 19.2 25.6 32 38.4 44.8 51.2 57.6 64 -> nearest multiples of 8, deduplicated
    assert g.nearest(ASNGOptions().ratios) == (8, 16, 24, 32, 40, 48, 56, 64)
    assert g.nearest([1.0, 0.5, 0.25]) == (16, 32, 64)
    assert g.nearest([0.5, 0.25]) == (16, 32)  # without the full width unless asked (TAS asks)
    small = ChannelGroup("s", 16, (8, 16), np.arange(16), np.full(16, 1 / 16), ["s"])
    assert small.nearest(ASNGOptions().ratios) == (8, 16)


def test_batch_stat_eval():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten()).train()
    model[1].running_mean.fill_(5.0)
    before = _snapshot(model)
    x = torch.randn(8, 3, 6, 6)
    with torch.no_grad(), batch_stat_eval(model):
        assert not model.training and not model[2].training and model[1].training
        y1, y2 = model(x), model(x)
    torch.testing.assert_close(y1, y2)  # dropout off
    after = _snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats untouched
    assert model.training and model[1].training and model[1].track_running_stats  # modes restored
    # the batch norm normalised with the batch statistics: per-channel mean ~ bias (0)
    out = y1.view(8, 4, 4, 4)
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(x), y1)  # eval mode would use the running stats


# --------------------------------------------------------------------------- the searcher
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"])
def test_meets_budget_on_torchvision_families(digits, name):
    model, space = _torchvision(name)
    budget = Budget(macs=int(space.macs(space.full()) * 0.4))
    before = _snapshot(model)
    result = asng_search(space, budget, _context(model, digits))
    space.check(result.architecture)
    assert budget.fits(space, result.architecture)
    assert budget.excess(space, result.architecture) > 0.8  # repair widened it back toward the budget
    assert len(result.history) == 1 and set(result.history[0]) == RECORD_KEYS
    rec = result.history[0]
    assert rec["steps"] == 2 and math.isfinite(rec["weight_loss"]) and math.isfinite(rec["arch_loss"])
    after = _snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_params_budget_and_model_untouched(tiny, digits):
    model, space = tiny
    budget = Budget(params=int(space.params(space.full()) * 0.5))
    before = _snapshot(model)
    rng_before = torch.get_rng_state()
    result = asng_search(space, budget, _context(model, digits, epochs=2))
    assert budget.fits(space, result.architecture)
    after = _snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN buffers
    assert not model.training
    assert torch.equal(rng_before, torch.get_rng_state())  # torch's global generator was forked
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert all(0 < r["convergence"] <= 1 for r in result.history)
    assert result.history[1]["lr"] < result.history[0]["lr"]  # cosine schedule


def test_same_seed_same_architecture(digits):
    model, space = _torchvision("mobilenet_v3_small")
    budget = Budget(macs=int(space.macs(space.full()) * 0.5))
    runs = [asng_search(space, budget, _context(model, digits, seed=3, steps_per_epoch=3)) for _ in range(2)]
    assert runs[0].architecture == runs[1].architecture
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in run.history] for run in runs]
    assert strip[0] == strip[1]


def test_penalty_steers_the_distribution_into_the_budget(tiny, digits):
    # budget 35 % of the MACs: a quarter of the architectures are over it. The CE losses of this
    # untrained net barely differ, so the penalty drives θ: argmax θ (before repair) ends in budget
    model, space = tiny
    budget = Budget(macs=int(space.macs(space.full()) * 0.35))
    ctx = _context(model, digits, epochs=2, steps_per_epoch=15, ratios=[0.25, 0.5, 0.75, 1.0])
    history = asng_search(space, budget, ctx).history
    assert history[-1]["argmax_excess"] <= 1.0
    assert sum(r["over_budget"] for r in history) > 0  # the penalty was exercised
    assert all(r["penalized_loss"] >= r["arch_loss"] for r in history)
    uniform = np.mean([1 / 4, 1 / 4, 1 / 2])  # convergence of the uniform start: K = 4, 4, 2
    assert history[-1]["convergence"] > uniform
    assert history[-1]["updates"] > 0
    assert math.isclose(history[-1]["step_size"], 1.0 / history[-1]["Delta"])


def test_converge_threshold_stops_early(tiny, digits):
    model, space = tiny
    budget = Budget(macs=int(space.macs(space.full()) * 0.5))
    result = asng_search(space, budget, _context(model, digits, epochs=3, converge=0.01))
    assert len(result.history) == 1
    assert result.history[0]["steps"] == 1 and result.history[0]["converged"]
    assert budget.fits(space, result.architecture)


def test_default_epoch_is_one_pass_over_the_first_half(tiny, digits):
    # 48 images -> halves of 24 -> 2 batches of 16 and 8; options as the CLI parses them
    model, space = tiny
    budget = Budget(macs=int(space.macs(space.full()) * 0.5))
    ctx = _context(model, Subset(digits, list(range(48))), delta_max="inf", ratios=[0.5, 1], penalty=20)
    ctx.options.pop("steps_per_epoch")
    result = asng_search(space, budget, ctx)
    assert result.history[0]["steps"] == 2
    assert budget.fits(space, result.architecture)


def test_full_model_within_budget_is_kept(tiny, digits):
    model, space = tiny
    budget = Budget(macs=space.macs(space.full()))
    assert asng_search(space, budget, _context(model, digits)).architecture == space.full()


@pytest.mark.parametrize("options, message", [
    ({"ratios": [0.0, 0.5]}, "ratios"),
    ({"ratios": "half"}, "ratios"),
    ({"w_lr": -1}, "w_lr"),
    ({"penalty": "big"}, "penalty"),
    ({"converge": 1.5}, "converge"),
    ({"steps_per_epoch": 0}, "steps_per_epoch"),
])
def test_bad_options(tiny, digits, options, message):
    model, space = tiny
    budget = Budget(macs=int(space.macs(space.full()) * 0.5))
    with pytest.raises(CompressError, match=message):
        asng_search(space, budget, _context(model, digits, **options))


def test_user_errors(tiny, digits):
    model, space = tiny
    budget = Budget(macs=int(space.macs(space.full()) * 0.5))
    with pytest.raises(CompressError, match="model and training data"):
        asng_search(space, budget, SearchContext(model=model))
    with pytest.raises(CompressError, match="below the smallest"):
        asng_search(space, Budget(macs=10), _context(model, digits))
    with pytest.raises(CompressError, match="at least 4 training images"):
        asng_search(space, budget, _context(model, Subset(digits, [0, 1, 2])))

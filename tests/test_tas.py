"""TAS (compressor.search.tas) and the differentiable expected cost (compressor.costs.ExpectedCost).

Hand-computed values for channel-wise interpolation, the channel mixture and the gated cost loss;
Gumbel top-2 sampling and where its gradients go; expected cost == closed form at one-hot
probabilities; the supernet at a full-width sample == the plain network and at a discrete sample
== the masked network of :func:`apply_masks`; the whole search on three torchvision families.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compress_base.errors import CompressError
from compressor.budget import Budget
from compressor.costs import ExpectedCost, expected_macs, expected_params
from compressor.data import load_data
from compressor.models import ModelSpec, build_model
from compressor.search.base import SearchContext
from compressor.search.tas import TASOptions, cost_loss, tas_search, tau_schedule
from compressor.search.tas_ops import cwi, depth_stages, gumbel_softmax, gumbel_top2, mix_channels, terminal_layers
from compressor.search.tas_supernet import DEFAULT_RATIOS, TASSupernet
from compressor.space import SearchSpace
from compressor.surgery import apply_masks

from conftest import random_architecture, randomize_norms

pytestmark = pytest.mark.usefixtures("single_thread")

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def nets():
    """``nets(name)``: (model with calibrated norms, its space at 3x32x32, 10 classes), built once."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            model = randomize_norms(build_model(ModelSpec(name, num_classes=10)), seed=0, shape=SHAPE)
            cache[name] = (model, SearchSpace.build(model, SHAPE, name))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def digits():
    return load_data(None, resolution=32)


def _x(seed=1, n=2):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ---------------------------------------------------------------------- channel-wise interpolation
def test_cwi_hand_values():
    # channels [1, 2, 3] -> 4: bins [0,1) [0,2) [1,3) [2,3) -> 1, 1.5, 2.5, 3 (per pixel)
    x = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) * torch.tensor([1.0, 10.0]).view(1, 1, 1, 2)
    y = cwi(x, 4)
    assert y.shape == (1, 4, 1, 2)
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([1.0, 1.5, 2.5, 3.0]))
    torch.testing.assert_close(y[0, :, 0, 1], torch.tensor([10.0, 15.0, 25.0, 30.0]))
    # [a, b] -> 4 repeats: [a, a, b, b]
    torch.testing.assert_close(cwi(torch.tensor([[5.0, 7.0]]), 4), torch.tensor([[5.0, 5.0, 7.0, 7.0]]))
    # same width: unchanged
    assert cwi(x, 3) is x


def test_cwi_layouts_agree():
    x = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(0))
    ref = cwi(x, 8)  # adaptive_avg_pool3d on NCHW
    torch.testing.assert_close(ref, F.adaptive_avg_pool3d(x, (8, 3, 4)))
    channels_last = cwi(x.permute(0, 2, 3, 1), 8, dim=-1)  # (N, H, W, C) as a linear layer outputs
    torch.testing.assert_close(channels_last.permute(0, 3, 1, 2), ref)
    seq = cwi(x.flatten(2).transpose(1, 2), 8, dim=-1)  # (N, L, C)
    torch.testing.assert_close(seq.transpose(1, 2).reshape(2, 8, 3, 4), ref)


def test_mix_channels_hand_values():
    # 4 channels, ranking (most important first) 2, 0, 3, 1; widths 2 and 4 with weights .25/.75
    y = torch.tensor([10.0, 20.0, 30.0, 40.0]).view(1, 4, 1, 1)
    order = torch.tensor([2, 0, 3, 1])
    out = mix_channels(y, order, (2, 4), torch.tensor([0.25, 0.75]))
    # ranking order z = [30, 10, 40, 20]; width 2 -> [30, 10] -> cwi 4 -> [30, 30, 10, 10]
    # mix = .25*[30, 30, 10, 10] + .75*[30, 10, 40, 20] = [30, 15, 32.5, 17.5], back to channels 2, 0, 3, 1
    torch.testing.assert_close(out.view(4), torch.tensor([15.0, 17.5, 30.0, 32.5]))
    # widths 1 and 2: channels 3 and 1 (ranks 2, 3) become zero; z[:2] = [30, 10]
    out = mix_channels(y, order, (1, 2), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(out.view(4), torch.tensor([0.5 * 30 + 0.5 * 10, 0.0, 0.5 * 30 + 0.5 * 30, 0.0]))
    # channels outside ``order`` are left alone
    out = mix_channels(y, torch.tensor([3, 1]), (1, 1), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(out.view(4), torch.tensor([10.0, 0.0, 30.0, 40.0]))
    # (N, L, C) layout, channel axis last
    z = torch.arange(8.0).view(1, 2, 4)
    out = mix_channels(z, torch.arange(4), (2, 4), torch.tensor([0.0, 1.0]), dim=-1)
    torch.testing.assert_close(out, z)


# ---------------------------------------------------------------------- Gumbel sampling
def test_gumbel_top2_draws_two_distinct_valid_indices():
    logits = torch.tensor([[0.0, 1.0, -1.0, float("-inf")], [2.0, 0.5, float("-inf"), float("-inf")]])
    gen = torch.Generator().manual_seed(0)
    counts = np.zeros((2, 4))
    for tau in (5.0, 1.0, 0.1):
        for _ in range(100):
            idx, w = gumbel_top2(logits, tau, gen)
            assert idx.shape == (2, 2) and w.shape == (2, 2)
            assert (idx[:, 0] != idx[:, 1]).all()
            assert idx[0].max() <= 2 and idx[1].max() <= 1  # never a padded entry
            torch.testing.assert_close(w.sum(-1), torch.ones(2))
            assert (w >= 0).all()
            for r in range(2):
                counts[r, idx[r].numpy()] += 1
    assert counts[0, :3].min() > 0 and counts[0, 3] == 0
    with pytest.raises(ValueError):
        gumbel_top2(torch.tensor([0.0, float("-inf")]), 1.0)


def test_gumbel_top2_gradient_reaches_alpha_through_mixture():
    gen = torch.Generator().manual_seed(0)
    alpha = torch.nn.Parameter(torch.tensor([[0.1, -0.2, 0.3, 0.0]]))
    mask = torch.tensor([[True, True, True, False]])
    y = torch.randn(2, 8, 3, 3, generator=gen)
    target = torch.randn(2, 8, 3, 3, generator=gen)
    cands = (2, 5, 8)
    idx, w = gumbel_top2(alpha.masked_fill(~mask, float("-inf")), 1.0, gen)
    i1, i2 = idx[0].tolist()
    out = mix_channels(y, torch.randperm(8, generator=gen), (cands[i1], cands[i2]), w[0])
    ((out - target) ** 2).sum().backward()  # a loss on the mixed output only: no cost term
    grad = alpha.grad
    assert torch.isfinite(grad).all()
    assert grad[0, :3].abs().sum() > 0
    assert grad[0, 3] == 0  # padding gets nothing


def test_gumbel_softmax_rows_sum_to_one():
    p = gumbel_softmax(torch.tensor([[0.0, 1.0, float("-inf")]]), 0.5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(p.sum(-1), torch.ones(1))
    assert p[0, 2] == 0


def test_supernet_gradient_reaches_alpha_and_beta_from_ce_only(nets):
    model, space = nets("resnet18")
    work = copy.deepcopy(model).train()
    net = TASSupernet(space, work, generator=torch.Generator().manual_seed(0))
    net.sample(2.0, torch.Generator().manual_seed(1), grad=True)
    F.cross_entropy(work(_x(n=4)), torch.tensor([0, 1, 2, 3])).backward()
    assert net.alpha.grad is not None and net.alpha.grad.abs().sum() > 0
    assert net.beta.grad is not None and net.beta.grad.abs().sum() > 0
    assert (net.alpha.grad[~net.width_mask] == 0).all()
    net.remove()
    assert _no_hooks(work)


# ---------------------------------------------------------------------- expected cost
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_b0", "densenet121", "convnext_tiny"])
def test_expected_cost_equals_closed_form_at_one_hot(nets, name):
    _, space = nets(name)
    for seed in range(3):
        arch = random_architecture(space, seed)
        widths, kept = space.encode(arch)
        probs = [None if not g.is_decision else
                 F.one_hot(torch.tensor(g.choices.index(int(widths[i]))), len(g.choices)).double()
                 for i, g in enumerate(space.groups)]
        keep = torch.as_tensor(kept, dtype=torch.float64)
        assert round(float(expected_macs(space, probs, keep))) == space.macs(arch)
        assert round(float(expected_params(space, probs, keep))) == space.params(arch)
    # with TAS's candidate subsets (the layout the searcher uses)
    slots = [i for i, g in enumerate(space.groups) if g.is_decision]
    table = space.width_table(DEFAULT_RATIOS, with_full=True)
    cands = [table[space.groups[i].name] for i in slots]
    cost = ExpectedCost(space, slots, cands)
    rng = np.random.default_rng(0)
    pick = [int(rng.integers(len(c))) for c in cands]
    probs = torch.zeros(len(slots), cost.width, dtype=torch.float64)
    probs[torch.arange(len(slots)), torch.tensor(pick)] = 1.0
    kept = rng.random(len(space.blocks)) < 0.5
    arch = space.architecture({space.groups[i].name: c[k] for i, c, k in zip(slots, cands, pick)},
                              {b.name: bool(k) for b, k in zip(space.blocks, kept)})
    assert round(float(cost.macs(probs, torch.as_tensor(kept, dtype=torch.float64)))) == space.macs(arch)


def test_expected_cost_at_uniform_is_product_of_expectations(nets):
    _, space = nets("resnet18")
    probs = [None if not g.is_decision else torch.full((len(g.choices),), 1.0 / len(g.choices), dtype=torch.float64)
             for g in space.groups]
    value = float(expected_macs(space, probs))
    smallest = space.macs(space.architecture({g.name: g.choices[0] for g in space.decision_groups}))
    assert smallest < value < space.macs(space.full())


def test_gradient_reaches_logits_through_expected_cost_alone(nets):
    model, space = nets("mobilenet_v2")
    net = TASSupernet(space, copy.deepcopy(model), generator=torch.Generator().manual_seed(0))
    net.remove()
    before = net.expected_cost("macs").item()
    torch.log(net.expected_cost("macs")).backward()
    assert net.alpha.grad.abs().sum() > 0 and net.beta.grad.abs().sum() > 0
    assert torch.isfinite(net.alpha.grad).all() and (net.alpha.grad[~net.width_mask] == 0).all()
    with torch.no_grad():  # a descent step on log E[MACs] lowers E[MACs]
        net.alpha -= 0.5 * net.alpha.grad
        net.beta -= 0.5 * net.beta.grad
    assert net.expected_cost("macs").item() < before
    # the functional API: gradient w.r.t. the logits of one group
    logits = torch.zeros(len(space.groups[0].choices), requires_grad=True)
    probs = [F.softmax(logits, 0) if i == 0 else None for i in range(len(space.groups))]
    expected_macs(space, probs).backward()
    assert logits.grad.abs().sum() > 0


def test_keep_probabilities_are_reverse_cumulative_sums(nets):
    model, space = nets("resnet18")
    net = TASSupernet(space, copy.deepcopy(model))
    net.remove()
    names = [space.blocks[j].name for j in net.stages[0]]
    assert names == ["layer1.0", "layer1.1"]
    with torch.no_grad():
        net.beta.zero_()
        net.beta[0, :3] = torch.log(torch.tensor([0.2, 0.5, 0.3]))
    keep = net.keep_probs()
    torch.testing.assert_close(keep[net.stages[0]], torch.tensor([0.8, 0.3], dtype=torch.float64))
    # single-block stages at uniform depth: kept with probability 1/2
    torch.testing.assert_close(keep[net.stages[1]], torch.tensor([0.5], dtype=torch.float64))


# ---------------------------------------------------------------------- cost loss
def test_cost_loss_gate_on_hand_numbers():
    full, target, t = 100.0, 50.0, 0.05  # band [45, 50]
    e = torch.tensor(40.0, dtype=torch.float64, requires_grad=True)
    below = cost_loss(e, 40.0, target, full, t)
    assert below.item() == pytest.approx(-math.log(0.4))
    below.backward()
    assert e.grad.item() == pytest.approx(-1 / 40.0)  # descent grows E[cost]
    e.grad = None
    above = cost_loss(e, 60.0, target, full, t)
    assert above.item() == pytest.approx(math.log(0.4))
    above.backward()
    assert e.grad.item() == pytest.approx(1 / 40.0)  # descent shrinks E[cost]
    for inside in (45.0, 47.0, 50.0):  # both edges belong to the band
        assert cost_loss(e, inside, target, full, t).item() == 0.0
    assert cost_loss(e, 44.9, target, full, t).item() > 0 and cost_loss(e, 50.1, target, full, t).item() < 0
    assert cost_loss(e, 49.9, target, full, 0.0).item() > 0  # t = 0: the band shrinks to the target
    assert cost_loss(e, 50.0, target, full, 0.0).item() == 0.0


# ---------------------------------------------------------------------- structure
def test_width_table_and_tau_schedule(nets):
    _, space = nets("resnet18")
    g = next(g for g in space.decision_groups if g.channels == 64)
    assert space.width_table(DEFAULT_RATIOS, with_full=True)[g.name] == (16, 24, 32, 40, 48, 56, 64)
    assert space.width_table((0.5,), with_full=True)[g.name] == (32, 64)  # the full width is always a candidate
    assert tau_schedule(0, 11) == pytest.approx(5.0)
    assert tau_schedule(5, 11) == pytest.approx(2.55)
    assert tau_schedule(10, 11) == pytest.approx(0.1)


def test_terminal_layers(nets):
    model, space = nets("resnet18")
    term = terminal_layers(space, model)
    assert "bn1" in term and "conv1" not in term  # the norm after the conv ends the chain
    assert "layer1.0.bn2" in term and "layer1.0.conv2" not in term
    assert "layer2.0.downsample.1" in term and "layer2.0.downsample.0" not in term
    model, space = nets("mobilenet_v2")
    term = terminal_layers(space, model)
    # expand conv -> BN -> in-place ReLU6 -> depthwise conv: the BN still ends its chain
    assert "features.2.conv.0.1" in term and "features.2.conv.0.0" not in term
    assert "features.2.conv.1.1" in term and "features.2.conv.1.0" not in term
    model, space = nets("convnext_tiny")
    term = terminal_layers(space, model)
    assert "features.1.0.block.0" not in term and "features.1.0.block.2" in term  # LayerNorm after a permute
    assert "features.2.1" in term  # downsample conv feeding a depthwise conv and a residual sum


def test_depth_stages(nets):
    for name, expected in [
        ("resnet18", [["layer1.0", "layer1.1"], ["layer2.1"], ["layer3.1"], ["layer4.1"]]),
        ("mobilenet_v2", [["features.3"], ["features.5", "features.6"], ["features.8", "features.9", "features.10"],
                          ["features.12", "features.13"], ["features.15", "features.16"]]),
    ]:
        model, space = nets(name)
        assert [[space.blocks[j].name for j in st] for st in depth_stages(space, model)] == expected


# ---------------------------------------------------------------------- the supernet computes the right networks
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_b0", "convnext_tiny"])
def test_full_width_sample_is_the_plain_network(nets, name):
    model, space = nets(name)
    x = _x()
    with torch.no_grad():
        ref = model(x)
    net = TASSupernet(space, model)
    try:
        net.set_full()
        with torch.no_grad():
            y = model(x)
    finally:
        net.remove()
    assert _no_hooks(model)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "densenet121"])
def test_discrete_sample_is_the_masked_network(nets, name):
    """Both sampled widths equal and a one-hot depth: the supernet computes apply_masks(arch)."""
    model, space = nets(name)
    x = _x()
    net = TASSupernet(space, model)
    try:
        for seed in range(2):
            rng = np.random.default_rng(seed)
            pick = [int(rng.integers(len(c))) for c in net.candidates]
            depth = [int(rng.integers(len(st) + 1)) for st in net.stages]
            net.set_sample([[i, i] for i in pick], torch.tensor([[0.3, 0.7]] * len(pick)),
                           F.one_hot(torch.tensor(depth, dtype=torch.long), net.depth_mask.shape[1]).float())
            arch = space.architecture(
                {space.groups[g].name: net.candidates[s][pick[s]] for s, g in enumerate(net.slot_groups)},
                {space.blocks[j].name: k < d for st, d in zip(net.stages, depth) for k, j in enumerate(st)})
            with torch.no_grad():
                y = model(x)
                net.active = False
                with apply_masks(space, model, arch):
                    ref = model(x)
                net.active = True
            torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    finally:
        net.remove()


# ---------------------------------------------------------------------- options
def test_options():
    assert TASOptions.from_dict({}) == TASOptions()
    opts = TASOptions.from_dict({"ratios": "0.5,1.0", "tolerance": "0.1", "steps_per_epoch": 3, "fill": "true"})
    assert opts.ratios == (0.5, 1.0) and opts.tolerance == 0.1 and opts.steps_per_epoch == 3 and opts.fill
    for bad in ({"ratio": [0.5]}, {"ratios": [0.0, 1.0]}, {"ratios": "x"}, {"tau_min": 10}, {"a_lr": -1},
                {"steps_per_epoch": 0}, {"a_betas": [0.5]}):
        with pytest.raises(CompressError):
            TASOptions.from_dict(bad)


# ---------------------------------------------------------------------- the search
def _context(model, digits, seed=0, **options):
    # refine_images=0: the final moves by weight norms, fast; test_scoring.py tests them by loss
    return SearchContext(model=model, train_data=digits.train, val_data=digits.val, batch_size=16, epochs=1,
                         seed=seed, quiet=True, options={"steps_per_epoch": 3, "refine_images": 0, **options})


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_b0"])
def test_tas_search_meets_budget_and_leaves_model_alone(nets, digits, name):
    model, space = nets(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    training, flags = model.training, [p.requires_grad for p in model.parameters()]
    budget = Budget(macs=int(0.5 * space.macs(space.full())))
    result = tas_search(space, budget, _context(model, digits))
    space.check(result.architecture)
    assert budget.fits(space, result.architecture)
    epoch, final = result.history[0], result.history[-1]
    for key in ("tau", "ce", "weight_ce", "cost_loss", "argmax_macs", "expected_macs"):
        assert math.isfinite(epoch[key]), key
    assert epoch["tau"] == pytest.approx(0.1)
    assert final["result"] == "argmax" and final["final_macs"] == space.macs(result.architecture)
    assert final["repaired"] == (final["argmax_macs"] != final["final_macs"] or final["repair_moves"] > 0)
    # context.model untouched: weights, buffers, mode, flags, no hooks left
    assert model.training == training and [p.requires_grad for p in model.parameters()] == flags
    assert _no_hooks(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_tas_search_is_deterministic_and_repairs(nets, digits):
    model, space = nets("resnet18")
    budget = Budget(macs=int(0.25 * space.macs(space.full())), params=int(0.5 * space.params(space.full())))

    def run(seed):
        torch.manual_seed(1234 + seed)  # the global RNG must not matter
        result = tas_search(space, budget, _context(model, digits, seed=seed))
        return result.architecture, [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]

    arch_a, hist_a = run(0)
    arch_b, hist_b = run(0)
    assert arch_a == arch_b and hist_a == hist_b
    assert budget.fits(space, arch_a)
    final = hist_a[-1]  # a random-ish argmax at a tight budget: repair had to move it
    assert not final["fits"] and final["repaired"] and final["repair_moves"] > 0
    assert final["final_macs"] <= budget.macs and final["final_params"] <= budget.params
    assert "argmax_params" in hist_a[0] and "expected_params" in hist_a[0]
    _, hist_c = run(1)
    assert hist_c[0]["ce"] != hist_a[0]["ce"]  # the seed is used


def test_tas_search_cost_loss_pushes_towards_budget(nets, digits):
    """With a loose budget (argmax below the band) the expected cost grows epoch over epoch."""
    model, space = nets("resnet18")
    budget = Budget(macs=int(0.95 * space.macs(space.full())))
    ctx = _context(model, digits, a_lr=0.05)
    ctx.epochs = 2
    history = tas_search(space, budget, ctx).history
    assert history[0]["cost_loss"] > 0 and history[1]["cost_loss"] > 0  # the grow branch
    assert history[1]["expected_macs"] > history[0]["expected_macs"]


def test_tas_fill_spends_what_the_argmax_leaves_of_the_budget(nets, digits):
    model, space = nets("resnet18")
    budget = Budget(macs=int(0.9 * space.macs(space.full())))
    kept, filled = (tas_search(space, budget, _context(model, digits, fill=fill)).history[-1] for fill in (False, True))
    assert kept["fits"] and filled["fits"]  # the same argmax, within budget
    assert kept["final_macs"] == kept["argmax_macs"] and not kept["repaired"]  # fill=false: the paper's argmax
    assert filled["repaired"] and filled["argmax_macs"] < filled["final_macs"] <= budget.macs


def test_tas_search_returns_full_model_when_it_fits(nets, digits):
    model, space = nets("resnet18")
    result = tas_search(space, Budget(macs=space.macs(space.full())), _context(model, digits))
    assert result.architecture == space.full()

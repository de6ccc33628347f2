"""Tests for compressor.search.autoshrink (AutoShrink's progressive shrinking, docs/ALGORITHMS.md, autoshrink).

Models are torchvision families at 3x32x32 with 10 classes, scored on tiny subsets of the bundled
digits, with k = 2-3 candidates, one fine-tuning step and one validation batch, so every search
runs in seconds on one CPU thread.
"""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from compress_base.errors import CompressError
from compressor.budget import Budget
from compressor.costs import MacsMetric, ParamsMetric
from compressor.counting import count_macs
from compressor.data import load_data
from compressor.models import ModelSpec, build_model
from compressor.search.autoshrink import (
    AutoShrinkOptions,
    Move,
    apply_move,
    autoshrink_search,
    best_snapshot,
    legal_moves,
    move_between,
    narrower,
    score,
)
from compressor.search.autoshrink_proxy import ScratchScorer
from compressor.search.base import SearchContext
from compressor.space import ChannelGroup, SearchSpace, notch_ratios
from compressor.surgery import materialize

SHAPE = (3, 32, 32)
FAST = {"k": 3, "finetune_steps": 1, "eval_batches": 1, "calib_batches": 1, "commit_steps": 1}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data():
    bundle = load_data(None, resolution=32, seed=0)
    return Subset(bundle.train, list(range(48))), Subset(bundle.val, list(range(16)))


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            model = build_model(ModelSpec(name, num_classes=10)).eval()
            cache[name] = (model, SearchSpace.build(model, SHAPE, name))
        return cache[name]

    return get


def _context(model, data, seed=0, **options):
    train, val = data
    return SearchContext(model=model, train_data=train, val_data=val, batch_size=16, epochs=1, seed=seed,
                         quiet=True, options={**FAST, **options})


def _budget(space, fraction):
    return Budget(macs=int(space.macs(space.full()) * fraction))


def _steps(history):
    return [h for h in history if "step" in h]


def _arch(space, entry):
    return space.architecture(entry["architecture"]["widths"], entry["architecture"]["blocks"])


# --------------------------------------------------------------------------- score and moves
def test_score_on_hand_numbers():
    assert score(0.9, 1e6) == pytest.approx(0.9)  # log10(1e6) - 6 = 0
    assert score(0.8, 1e7) == pytest.approx(0.7)  # 0.8 - 0.1 * 1
    assert score(0.8, 1e5) == pytest.approx(0.9)  # smaller than 1M MACs earns a bonus
    assert score(0.75, 3e8) == pytest.approx(0.75 - 0.1 * 2.4771212547, abs=1e-9)
    assert score(0.5, 1e8, cost_weight=0.2) == pytest.approx(0.1)
    assert score(0.5, 10.0, cost_weight=0.1, cost_offset=0.0) == pytest.approx(0.4)  # e.g. latency in ms
    with pytest.raises(ValueError):
        score(0.5, 0.0)


def _group(channels, choices):
    return ChannelGroup("g", channels, tuple(choices), np.arange(channels), np.full(channels, 1 / channels), ["g"])


def test_notch_grid_rounds_ten_percent_steps_to_the_choices():
    g = _group(64, range(8, 65, 8))
    # 57.6 -> 56, 51.2 -> 48, 44.8 -> 48, 38.4 -> 40, 32, 25.6 -> 24, 19.2 -> 16, 12.8 -> 16, 6.4 -> 8
    assert g.nearest(notch_ratios(0.1), with_full=True) == (8, 16, 24, 32, 40, 48, 56, 64)
    g = _group(200, list(range(24, 200, 8)) + [200])
    # 180 -> 184 (tie goes wider), 160, 140 -> 144, 120, 100 -> 104, 80, 60 -> 64, 40, 20 -> 24 (narrowest)
    assert g.nearest(notch_ratios(0.1), with_full=True) == (24, 40, 64, 80, 104, 120, 144, 160, 184, 200)
    assert narrower(g, 200) == 184 and narrower(g, 184) == 160 and narrower(g, 24) is None
    assert narrower(g, 150) == 144  # off-grid widths step down to the grid
    # 150 -> 152 and 100 -> 104 (ties go wider), 50 -> 48
    assert g.nearest(notch_ratios(0.25), with_full=True) == (48, 104, 152, 200)
    assert notch_ratios(0.1)[-1] == 0.1 and notch_ratios(0.1)[7] == 0.3  # 1 - 7 * 0.1, rounded
    with pytest.raises(CompressError):
        notch_ratios(0)


def test_legal_moves_and_apply_move(models):
    _, space = models("resnet18")
    full = space.full()
    moves = legal_moves(space, full)
    assert len(moves) == len(space.decision_groups) + len(space.blocks)
    for m in moves:
        after = apply_move(space, full, m)
        (kind, name, before_value, after_value), = move_between(full, after)
        assert (kind, name, after_value) == (m.kind, m.name, m.value)
        assert space.macs(after) < space.macs(full)
    b = space.blocks[0].name
    dropped = apply_move(space, full, Move("block", b, False))
    assert Move("block", b, False) not in legal_moves(space, dropped)


def test_options_are_validated(models, data):
    model, space = models("mobilenet_v3_small")
    ctx = _context(model, data)
    ctx.epochs = 7
    assert ScratchScorer(space, ctx, AutoShrinkOptions.from_dict({}), "cpu").epochs == 7  # scratch_epochs default
    assert AutoShrinkOptions.from_dict({"k": 4}).k == 4
    for bad in ({"kk": 1}, {"k": 0}, {"k": 2.5}, {"notch": 0}, {"proxy_train": "magic"}, {"finetune_lr": -1},
                {"cost_weight": "x"}, {"max_steps": -1}):
        with pytest.raises(CompressError):
            AutoShrinkOptions.from_dict(bad)
    assert set(AutoShrinkOptions.keys()) >= {"k", "notch", "cost_weight", "finetune_steps", "eval_batches",
                                             "commit_steps", "proxy_train", "scratch_epochs"}


# --------------------------------------------------------------------------- the search
@pytest.mark.slow
def test_one_move_per_step_and_best_snapshot(models, data):
    model, space = models("resnet18")
    before = copy.deepcopy(model.state_dict())
    budget = _budget(space, 0.75)
    result = autoshrink_search(space, budget, _context(model, data, extra_steps=2))
    steps = _steps(result.history)
    assert len(steps) >= 3
    prev = space.full()
    for i, entry in enumerate(steps, start=1):
        assert entry["step"] == i
        arch = _arch(space, entry)
        (kind, name, old, new), = move_between(prev, arch)  # exactly one decision changed
        if kind == "width":
            group = next(g for g in space.decision_groups if g.name == name)
            assert new == narrower(group, old)  # exactly one notch
        else:
            assert (old, new) == (True, False)  # exactly one block dropped
        assert (entry["move"], entry["name"], entry["value"]) == (kind, name, new)
        assert 1 <= len(entry["candidates"]) <= 3
        assert entry["score"] == max(c["score"] for c in entry["candidates"])
        assert entry["cost"] == space.macs(arch) and entry["fits"] == budget.fits(space, arch)
        assert entry["score"] == pytest.approx(score(entry["accuracy"], entry["cost"]))
        prev = arch
    # the budget first holds at the third-to-last step; two extra steps follow
    assert [e["fits"] for e in steps[-3:]] == [True, True, True] and not any(e["fits"] for e in steps[:-3])
    chosen = best_snapshot(result.history)
    assert chosen["score"] == max(e["score"] for e in steps if e["fits"])
    assert [e for e in steps if e.get("selected")] == [chosen]
    assert result.architecture == _arch(space, chosen)
    assert budget.fits(space, result.architecture)
    json.dumps(result.history)  # the history is plain data
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the context's model is untouched


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "mobilenet_v3_small"])
def test_result_meets_the_budget(models, data, name):
    model, space = models(name)
    budget = _budget(space, 0.8)
    result = autoshrink_search(space, budget, _context(model, data, k=2))
    assert budget.fits(space, result.architecture)
    assert not any(h.get("repair") for h in result.history)
    small = materialize(space, model, result.architecture)
    assert count_macs(small, SHAPE) == space.macs(result.architecture) <= budget.macs


@pytest.mark.slow
def test_same_seed_same_result(models, data):
    model, space = models("mobilenet_v3_small")
    budget = _budget(space, 0.9)
    a = autoshrink_search(space, budget, _context(model, data, seed=3, k=2))
    b = autoshrink_search(space, budget, _context(model, data, seed=3, k=2))
    assert a.architecture == b.architecture
    strip = [[(c["name"], c["value"], c["accuracy"]) for c in h["candidates"]] for h in _steps(a.history)]
    assert strip == [[(c["name"], c["value"], c["accuracy"]) for c in h["candidates"]] for h in _steps(b.history)]


def test_scratch_proxy_trains_fresh_networks(models, data):
    model, space = models("resnet18")
    before = copy.deepcopy(model.state_dict())
    budget = _budget(space, 0.9)
    result = autoshrink_search(space, budget, _context(model, data, k=2, proxy_train="scratch", scratch_epochs=1))
    assert budget.fits(space, result.architecture)
    assert _steps(result.history)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_cost_function_can_be_swapped(models, data):
    model, space = models("mobilenet_v3_small")
    budget = _budget(space, 0.9)

    result = autoshrink_search(space, budget, _context(model, data, k=2, cost_offset=5.0), cost=ParamsMetric(space))
    for entry in _steps(result.history):
        assert entry["cost"] == space.params(_arch(space, entry))
        assert entry["score"] == pytest.approx(entry["accuracy"] - 0.1 * (math.log10(entry["cost"]) - 5.0))
    assert MacsMetric(space).value(space.full()) == space.macs(space.full())


def test_full_model_within_budget_is_returned_as_is(models, data):
    model, space = models("mobilenet_v3_small")
    result = autoshrink_search(space, _budget(space, 1.5), _context(model, data))
    assert result.architecture == space.full()


def test_repair_when_steps_run_out(models, data):
    model, space = models("mobilenet_v3_small")
    budget = _budget(space, 0.5)
    result = autoshrink_search(space, budget, _context(model, data, k=2, max_steps=1))
    assert len(_steps(result.history)) == 1
    assert any(h.get("repair") for h in result.history)
    assert budget.fits(space, result.architecture)


def test_missing_data_is_a_user_error(models, data):
    model, space = models("mobilenet_v3_small")
    ctx = _context(model, data)
    ctx.val_data = None
    with pytest.raises(CompressError, match="validation"):
        autoshrink_search(space, _budget(space, 0.9), ctx)

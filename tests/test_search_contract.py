"""The contract every registered searcher keeps (compressor.search.registry): it meets the budget,
gives the same architecture for the same seed, resumes after an interruption to the result of an
uninterrupted search, and rejects unknown or ill-typed options with one line.

A tiny residual CNN at 3x32x32, a few hundred digits, one thread; ``CHEAP`` shortens the methods
that train (a method registered later runs with its defaults).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from compress_base.errors import CompressError
from compressor.budget import Budget
from compressor.data import load_data
from compressor.search import check_options, create
from compressor.search.loop import LoopSearcher
from compressor.search.registry import registered
from compressor.space import SearchSpace

pytestmark = pytest.mark.usefixtures("single_thread")

CHEAP = {"tas": {"steps_per_epoch": 2, "refine_images": 8}, "asng": {"steps_per_epoch": 2, "refine_images": 8},
         "autoshrink": {"k": 2, "finetune_steps": 1, "eval_batches": 1, "calib_batches": 1, "commit_steps": 1}}
METHODS = sorted(registered())


class _Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class Tiny(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(_Residual(width), _Residual(width))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    model = Tiny().eval()
    space = SearchSpace.build(model, (3, 32, 32), "tiny")
    data = load_data(resolution=32, seed=0)
    return model, space, Subset(data.train, list(range(128))), Subset(data.val, list(range(64)))


def _context(case, method, seed=0, checkpoint=None):
    from compressor.search import SearchContext

    model, _, train, val = case
    return SearchContext(model=model, train_data=train, val_data=val, batch_size=16, epochs=2, seed=seed,
                         quiet=True, options=dict(CHEAP.get(method, {})), checkpoint=checkpoint)


def _run(case, method, seed=0, checkpoint=None):
    space = case[1]
    budget = Budget(macs=int(0.3 * space.macs(space.full())))
    result = create(method, space, budget, _context(case, method, seed, checkpoint)).search()
    return budget, result.architecture, [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]


@pytest.mark.parametrize("method", METHODS)
def test_meets_the_budget_and_same_seed_same_architecture(case, method):
    space = case[1]
    budget, arch, history = _run(case, method)
    space.check(arch)
    assert budget.fits(space, arch)
    assert _run(case, method)[1:] == (arch, history)


@pytest.mark.parametrize("method", METHODS)
def test_resumes_to_the_same_result(case, method, tmp_path, monkeypatch):
    straight = _run(case, method, checkpoint=tmp_path / "straight.pt")[1:]
    if not issubclass(registered()[method], LoopSearcher):
        return  # one pass, no state: running it again is resuming it
    from compressor.search import loop

    saved = loop.save_state

    def save_then_die(path, state):
        saved(path, state)
        raise KeyboardInterrupt  # killed right after the first unit's state reached the disk

    killed = tmp_path / "killed.pt"
    monkeypatch.setattr(loop, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _run(case, method, checkpoint=killed)
    monkeypatch.setattr(loop, "save_state", saved)
    assert killed.is_file()
    assert _run(case, method, checkpoint=killed)[1:] == straight


@pytest.mark.parametrize("method", METHODS)
def test_rejects_bad_options(case, method):
    cls = registered()[method]
    keys = cls.Options.keys()
    with pytest.raises(CompressError, match=rf"^method {method} has no option 'no_such_key'; its options: "
                                            rf"{', '.join(keys) or 'none'}$"):
        check_options(method, {"no_such_key": 1})
    for key in keys:
        with pytest.raises(CompressError, match=rf"^{method} option {key}=.* must be "):
            check_options(method, {key: {"a": "mapping"}})
    check_options(method, dict(CHEAP.get(method, {})))
    with pytest.raises(CompressError, match="unknown method"):
        check_options("no-such-method", {})

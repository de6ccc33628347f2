"""Run the tas, asng and autoshrink searches on a small network without batch norm, in one process
or as one rank of several under torchrun, and save each rank's result (tests/test_distributed_search.py).

    python tests/_ddp_search.py OUT_DIR BATCH_SIZE
    torchrun --nproc_per_node 2 tests/_ddp_search.py OUT_DIR BATCH_SIZE

BATCH_SIZE is the per-rank batch of tas and asng; autoshrink, which splits candidates rather
than data among the ranks, always uses batches of 16.
"""
import json
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Subset

from compressor.budget import Budget
from compressor.data import load_data
from compressor.distributed import process_group, rank, world_size
from compressor.search import SEARCHERS
from compressor.search.base import SearchContext
from compressor.space import SearchSpace

SHAPE = (3, 16, 16)
OPTIONS = {
    "tas": {"steps_per_epoch": 6},
    "asng": {"steps_per_epoch": 6},
    "autoshrink": {"k": 4, "finetune_steps": 2, "commit_steps": 2, "calib_batches": 0, "eval_batches": 2,
                   "extra_steps": 2},
}


class PlainResNet(nn.Module):
    """A stem, one removable residual block, a strided convolution and a linear head; no batch norm
    and no dropout, so a batch split over ranks gives exactly the gradients of the whole batch."""

    def __init__(self, width: int = 16, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.block = Residual(width)
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))

    def forward(self, x):
        return self.head(self.down(self.block(self.stem(x))))


class Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


def main(out: Path, batch_size: int) -> None:
    torch.set_num_threads(1)
    data = load_data(resolution=SHAPE[1], seed=0)
    train, val = Subset(data.train, list(range(384))), Subset(data.val, list(range(96)))
    torch.manual_seed(0)
    model = PlainResNet().eval()
    space = SearchSpace.build(model, SHAPE, "plain")
    budget = Budget(macs=int(0.45 * space.macs(space.full())))
    results = {}
    for method, options in OPTIONS.items():
        context = SearchContext(model=model, train_data=train, val_data=val, epochs=1,
                                batch_size=16 if method == "autoshrink" else batch_size,
                                seed=3, quiet=True, options=dict(options))
        found = SEARCHERS[method](space, budget, context)
        results[method] = {"architecture": found.architecture.to_dict(), "history": found.history}
    (out / f"world{world_size()}-rank{rank()}.json").write_text(json.dumps(results, default=float))


if __name__ == "__main__":
    with process_group():
        main(Path(sys.argv[1]), int(sys.argv[2]))

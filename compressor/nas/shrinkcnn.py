"""The run of ``compress nas`` (docs/ALGORITHMS.md section 3): :func:`search_and_train_network` searches the cell
(:mod:`.cell_search`), deploys the best snapshot within the MAC budget
(:func:`compressor.networks.shrinkcnn.deploy_network`) and trains it.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from compress_base.errors import CompressError

from ..models import ModelSpec
from ..networks.shrinkcnn import deploy_network
from ..runtime import Runtime
from .cell_search import CellSnapshot, best_cell, shrinkcnn_search

log = logging.getLogger(__name__)


SEARCH_OPTIONS = ("k", "floor", "epochs", "patience", "lr", "batch_size", "train_images", "val_images",
                  "cost_weight", "cost_offset", "max_steps", "width", "stem", "score_initial")


def search_and_train_network(data, budget_macs: int, input_shape: Sequence[int] | None = None, *,
                             options: dict | None = None, epochs: int = 5, batch_size: int = 64, lr: float = 0.05,
                             runtime: Runtime | None = None, state_dir: str | Path | None = None,
                             ) -> tuple[nn.Module, ModelSpec, list[CellSnapshot], list[dict]]:
    """Search a ShrinkCNN cell on ``data`` (a :class:`~compressor.data.DataBundle`), deploy the best
    snapshot within ``budget_macs`` at ``input_shape`` (default: the data's 3×R×R), and train it
    for ``epochs`` with :func:`compressor.train.train` (SGD, ``lr``).

    ``options`` are :func:`shrinkcnn_search` settings (:data:`SEARCH_OPTIONS`); its proxy MACs are
    counted at the data's resolution. Returns the trained model (CPU, eval mode), the spec that
    rebuilds it, all snapshots, and the training's per-epoch records (those of
    :func:`compressor.train.train`). ``runtime`` gives the device, seed and verbosity (default: CPU,
    seed 0, quiet). With ``state_dir`` the search checkpoints every step and the training every
    epoch there, and a later call with the same folder continues where they stopped.
    """
    from ..data import make_loader
    from ..train import train

    runtime = runtime or Runtime(quiet=True)
    seed = runtime.seed
    options = dict(options or {})
    unknown = sorted(set(options) - set(SEARCH_OPTIONS))
    if unknown:
        raise CompressError(f"unknown ShrinkCNN option {unknown[0]!r}: use one of {', '.join(SEARCH_OPTIONS)}")
    proxy_shape = (3, data.resolution, data.resolution)
    shape = tuple(int(v) for v in (input_shape or proxy_shape))
    options.setdefault("batch_size", batch_size)
    state = Path(state_dir) if state_dir is not None else None
    snapshots = shrinkcnn_search(data.train, data.val, data.num_classes, proxy_shape, runtime=runtime,
                                 checkpoint=state / "search-shrinkcnn.pt" if state else None, **options)
    chosen = best_cell(snapshots)
    log.info("shrinkcnn: chose step %d (%d edges, proxy acc %.4f, score %.4f)", chosen.step, len(chosen.edges),
             chosen.accuracy, chosen.score)
    torch.manual_seed(seed)
    model, spec = deploy_network(chosen.edges, budget_macs, shape, data.num_classes)
    records: list[dict] = []
    if epochs > 0:
        train_loader = make_loader(data.train, batch_size, shuffle=True, seed=seed, shard=True)  # DDP under torchrun
        val_loader = make_loader(data.val, batch_size, shuffle=False, seed=seed)
        records = train(model, train_loader, epochs, lr=lr, runtime=runtime, val_loader=val_loader, desc="nas train",
                        checkpoint=state / "nas-train.pt" if state else None)
    return model.cpu().eval(), spec, snapshots, records

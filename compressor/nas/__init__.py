"""Architecture search from scratch (as opposed to compressing a given model): AutoShrink's ShrinkCNN.

``compressor.nas.shrinkcnn:shrinkcnn`` is a model spec like any user model, so a found network is
saved, loaded (``compressor.load``) and exported like every other compressed model.
"""
from .shrinkcnn import (
    CellSnapshot,
    ShrinkCNN,
    best_snapshot,
    deploy_network,
    full_edges,
    live_edges,
    run_nas,
    shrinkcnn,
    shrinkcnn_search,
)

__all__ = [
    "CellSnapshot",
    "ShrinkCNN",
    "best_snapshot",
    "deploy_network",
    "full_edges",
    "live_edges",
    "run_nas",
    "shrinkcnn",
    "shrinkcnn_search",
]

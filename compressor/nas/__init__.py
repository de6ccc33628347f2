"""Architecture search from scratch (as opposed to compressing a given model): AutoShrink's ShrinkCNN.

:mod:`.cell_search` holds the edge-shrinking search and :mod:`.shrinkcnn` :func:`run_nas`; the
network itself (cell, ShrinkCNN, its built-in model spec ``compressor.networks.shrinkcnn:shrinkcnn``
and the deployment within a MAC budget) is in :mod:`compressor.networks.shrinkcnn`, so a found
network is saved, loaded (``compressor.load``) and exported like every other compressed model.
"""
from ..networks.shrinkcnn import ShrinkCNN, deploy_network, full_edges, live_edges, shrinkcnn
from .cell_search import CellSnapshot, best_snapshot, shrinkcnn_search
from .shrinkcnn import run_nas

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

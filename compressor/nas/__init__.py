"""Architecture search from scratch (as opposed to compressing a given model): AutoShrink's ShrinkCNN.

:mod:`.cell_search` holds the edge-shrinking search and :mod:`.shrinkcnn` :func:`search_and_train_network`; the
network itself (cell, ShrinkCNN, its built-in model spec ``compressor.networks.shrinkcnn:shrinkcnn``
and the deployment within a MAC budget) is in :mod:`compressor.networks.shrinkcnn`, so a found
network is saved, loaded (``compressor.load``) and exported like every other compressed model.
"""
from ..networks.shrinkcnn import ShrinkCNN, deploy_network, full_edges, live_edges, shrinkcnn
from .cell_search import CellSnapshot, best_cell, shrinkcnn_search
from .shrinkcnn import search_and_train_network

__all__ = [
    "CellSnapshot",
    "ShrinkCNN",
    "best_cell",
    "deploy_network",
    "full_edges",
    "live_edges",
    "search_and_train_network",
    "shrinkcnn",
    "shrinkcnn_search",
]

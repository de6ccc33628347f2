"""Architecture search from scratch (as opposed to compressing a given model): AutoShrink's ShrinkCNN.

:mod:`.cell` holds the cell and the network built of it, :mod:`.cell_search` the edge-shrinking
search, :mod:`.shrinkcnn` the model spec, the deployment within a MAC budget and :func:`run_nas`.
``compressor.nas.shrinkcnn:shrinkcnn`` is a model spec like any user model, so a found network is
saved, loaded (``compressor.load``) and exported like every other compressed model.
"""
from .cell import ShrinkCNN, full_edges, live_edges
from .cell_search import CellSnapshot, best_snapshot, shrinkcnn_search
from .shrinkcnn import deploy_network, run_nas, shrinkcnn

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

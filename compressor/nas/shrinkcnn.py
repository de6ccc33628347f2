"""ShrinkCNN as a model: the spec a found network is saved and loaded by, its deployment within a
MAC budget, and the search → deploy → train run of ``compress nas`` (ALGORITHMS.md section 3).

:func:`shrinkcnn` is the model spec ``compressor.nas.shrinkcnn:shrinkcnn`` with JSON-able keyword
arguments, a built-in builder (``compressor.models.BUILTINS``): :func:`compressor.load` rebuilds a
found network without importing user code, its settings checked by :func:`shrinkcnn_from_spec`.
:func:`deploy_network` stacks the cell the search chose (:mod:`.cell_search`) into the largest
network that fits a MAC budget at the deployment input shape; :func:`run_nas` does search →
deploy → train.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..counting import count_params
from ..errors import CompressError
from ..models import ModelSpec
from ..units import format_count
from .cell import NUM_NODES, ShrinkCNN, full_edges, live_edges, shrinkcnn_macs
from .cell_search import CellSnapshot, best_snapshot, shrinkcnn_search

log = logging.getLogger(__name__)

SPEC_NAME = "compressor.nas.shrinkcnn:shrinkcnn"


# ---------------------------------------------------------------------- the model spec
def shrinkcnn(num_classes: int = 10, edges: Sequence[Sequence[int]] | None = None, cells_per_stage: int = 1,
              width: int = 16, stem: int = 32, scales: Sequence[int] = (1, 2, 4), stem_stride: int = 1) -> ShrinkCNN:
    """Model spec ``compressor.nas.shrinkcnn:shrinkcnn``: a ShrinkCNN from JSON-able arguments
    (``edges`` a list of ``[i, j]``; None: the fully connected cell)."""
    return ShrinkCNN(edges, num_classes, tuple(scales), cells_per_stage, width, stem, stem_stride)


def _spec_bounds() -> dict[str, tuple[int, int]]:
    """Integer settings a spec read from a file may give, and their ranges (what deployment uses)."""
    return {"cells_per_stage": (1, max(CELLS_CHOICES)), "width": (1, max(WIDTH_CHOICES)),
            "stem": (1, 2 * max(WIDTH_CHOICES)), "stem_stride": (1, 128)}


def _spec_int(where: str, key: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CompressError(f"{where}: ShrinkCNN setting {key}={value!r} must be an integer in {lo}..{hi}: "
                            "save the model again")
    return value


def _spec_list(where: str, key: str, value, most: int) -> list:
    if not isinstance(value, list) or not 1 <= len(value) <= most:
        raise CompressError(f"{where}: ShrinkCNN setting {key} must be a list of 1..{most} entries: "
                            "save the model again")
    return value


def _spec_edge(where: str, edge) -> list[int]:
    if not isinstance(edge, list) or len(edge) != 2:
        raise CompressError(f"{where}: ShrinkCNN edge {edge!r} must be a pair of node indices, e.g. [0, 3]: "
                            "save the model again")
    return [_spec_int(where, "edge node", v, 0, NUM_NODES - 1) for v in edge]


def shrinkcnn_from_spec(num_classes: int | None, kwargs: dict, where: str = "model spec") -> ShrinkCNN:
    """:func:`shrinkcnn` for a spec read from a file: every setting's name, type and range is
    checked before anything is built (the ranges cover what :func:`deploy_network` makes)."""
    bounds = _spec_bounds()
    unknown = sorted(set(kwargs) - set(bounds) - {"edges", "scales"})
    if unknown:
        raise CompressError(f"{where}: unknown ShrinkCNN setting {unknown[0]!r}: use "
                            f"{', '.join(sorted([*bounds, 'edges', 'scales']))}")
    checked = {key: _spec_int(where, key, kwargs[key], *bounds[key]) for key in bounds if key in kwargs}
    stride = checked.get("stem_stride", 1)
    if stride & (stride - 1):
        raise CompressError(f"{where}: ShrinkCNN setting stem_stride={stride} must be a power of two (1, 2, 4, ...)")
    if "scales" in kwargs:
        scales = _spec_list(where, "scales", kwargs["scales"], 4)
        checked["scales"] = [_spec_int(where, "scales", s, 1, 8) for s in scales]
    if kwargs.get("edges") is not None:
        edges = _spec_list(where, "edges", kwargs["edges"], len(full_edges()))
        checked["edges"] = [_spec_edge(where, e) for e in edges]
    return shrinkcnn(10 if num_classes is None else num_classes, **checked)


def model_spec(edges: Iterable, num_classes: int, cells_per_stage: int = 1, width: int = 16, stem: int = 32,
               scales: Sequence[int] = (1, 2, 4), stem_stride: int = 1) -> ModelSpec:
    """The :class:`~compressor.models.ModelSpec` that rebuilds this network (kwargs are JSON data)."""
    kwargs = {"edges": [list(e) for e in live_edges(edges)], "cells_per_stage": int(cells_per_stage),
              "width": int(width), "stem": int(stem), "scales": [int(s) for s in scales],
              "stem_stride": int(stem_stride)}
    return ModelSpec(SPEC_NAME, int(num_classes), kwargs)


# ---------------------------------------------------------------------- deployment
CELLS_CHOICES = (1, 2, 3, 4)
WIDTH_CHOICES = (8, 16, 24, 32, 40, 48, 64, 80, 96, 128)


def auto_stem_stride(input_shape: Sequence[int], proxy_resolution: int = 32) -> int:
    """The stem reduction for a deployment input: the largest power of two s with
    min(H, W) // s >= ``proxy_resolution`` (1 below that), so the first stage sees about the proxy's
    resolution: 1 at 32×32, 2 at 64×64, 4 at 224×224 (56×56, 28×28, 14×14 in the three stages)."""
    size = min(int(input_shape[1]), int(input_shape[2]))
    s = 1
    while size // (s * 2) >= proxy_resolution:
        s *= 2
    return s


def deploy_network(cell_edges: Iterable, budget_macs: int, input_shape: Sequence[int] = (3, 32, 32),
                   num_classes: int = 10, *, cells_choices: Sequence[int] = CELLS_CHOICES,
                   width_choices: Sequence[int] = WIDTH_CHOICES, stem_stride: int | None = None,
                   scales: Sequence[int] = (1, 2, 4)) -> tuple[ShrinkCNN, ModelSpec]:
    """Stack the found cell into the largest network that fits ``budget_macs`` at ``input_shape``.

    Tries every (cells per stage, width) pair of the choices, with the stem at twice the width,
    and keeps the one with the most MACs within budget (ties: fewer cells). ``stem_stride``
    None picks :func:`auto_stem_stride`. Returns the network (freshly initialised, eval mode)
    and the ModelSpec that rebuilds it.
    """
    edges = live_edges(cell_edges)
    if not edges:
        raise CompressError("the cell has no live edge: pick a snapshot with edges")
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or shape[0] != 3:
        raise CompressError(f"deployment input shape {shape} must be 3xHxW")
    stride = auto_stem_stride(shape) if stem_stride is None else int(stem_stride)
    best = None
    smallest = None
    for cells in cells_choices:
        for width in width_choices:
            kw = dict(cells_per_stage=int(cells), width=int(width), stem=2 * int(width), scales=tuple(scales),
                      stem_stride=stride)
            macs = shrinkcnn_macs(edges, shape, num_classes, **kw)
            if smallest is None or macs < smallest:
                smallest = macs
            if macs <= budget_macs and (best is None or macs > best[0]):
                best = (macs, kw)
    if best is None:
        raise CompressError(
            f"budget of {format_count(budget_macs)} MACs is below the smallest ShrinkCNN of this cell "
            f"({format_count(smallest)} MACs at input {'x'.join(map(str, shape))}): "
            f"raise the budget to at least {smallest}")
    macs, kw = best
    spec = model_spec(edges, num_classes, **kw)
    model = shrinkcnn(num_classes, **spec.kwargs).eval()
    log.info("shrinkcnn deploy: %d cells per stage, width %d, stem stride %d: %s MACs (budget %s), %s params",
             kw["cells_per_stage"], kw["width"], stride, format_count(macs), format_count(budget_macs),
             format_count(count_params(model)))
    return model, spec


# ---------------------------------------------------------------------- end to end
SEARCH_OPTIONS = ("k", "floor", "epochs", "patience", "lr", "batch_size", "train_images", "val_images",
                  "cost_weight", "cost_offset", "max_steps", "width", "stem", "score_initial")


def run_nas(data, budget_macs: int, input_shape: Sequence[int] | None = None, *, options: dict | None = None,
            epochs: int = 5, batch_size: int = 64, lr: float = 0.05, seed: int = 0,
            device: str | torch.device = "cpu", quiet: bool = False,
            state_dir: str | Path | None = None) -> tuple[nn.Module, ModelSpec, list[CellSnapshot]]:
    """Search a ShrinkCNN cell on ``data`` (a :class:`~compressor.data.DataBundle`), deploy the best
    snapshot within ``budget_macs`` at ``input_shape`` (default: the data's 3×R×R), and train it
    for ``epochs`` with :func:`compressor.train.train` (SGD, ``lr``).

    ``options`` are :func:`shrinkcnn_search` settings (:data:`SEARCH_OPTIONS`); its proxy MACs are
    counted at the data's resolution. Returns the trained model (CPU, eval mode), the spec that
    rebuilds it, and all snapshots. With ``state_dir`` the search checkpoints every step and the
    training every epoch there, and a later call with the same folder continues where they stopped.
    """
    from ..data import make_loader
    from ..train import train

    options = dict(options or {})
    unknown = sorted(set(options) - set(SEARCH_OPTIONS))
    if unknown:
        raise CompressError(f"unknown ShrinkCNN option {unknown[0]!r}: use one of {', '.join(SEARCH_OPTIONS)}")
    proxy_shape = (3, data.resolution, data.resolution)
    shape = tuple(int(v) for v in (input_shape or proxy_shape))
    options.setdefault("batch_size", batch_size)
    state = Path(state_dir) if state_dir is not None else None
    snapshots = shrinkcnn_search(data.train, data.val, data.num_classes, proxy_shape, seed=seed, device=device,
                                 quiet=quiet, checkpoint=state / "search-shrinkcnn.pt" if state else None, **options)
    chosen = best_snapshot(snapshots)
    log.info("shrinkcnn: chose step %d (%d edges, proxy acc %.4f, score %.4f)", chosen.step, len(chosen.edges),
             chosen.accuracy, chosen.score)
    torch.manual_seed(seed)
    model, spec = deploy_network(chosen.edges, budget_macs, shape, data.num_classes)
    if epochs > 0:
        train_loader = make_loader(data.train, batch_size, shuffle=True, seed=seed, shard=True)  # DDP under torchrun
        val_loader = make_loader(data.val, batch_size, shuffle=False, seed=seed)
        train(model, train_loader, epochs, lr=lr, device=device, val_loader=val_loader, quiet=quiet, desc="nas train",
              checkpoint=state / "nas-train.pt" if state else None)
    return model.cpu().eval(), spec, snapshots

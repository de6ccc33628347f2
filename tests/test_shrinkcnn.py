"""Tests for compressor.nas.shrinkcnn (AutoShrink's ShrinkCNN cell search, docs/ALGORITHMS.md section 3).

Searches run on tiny subsets of the bundled digits at 16x16 with a narrow proxy network, one
training epoch per candidate and k = 2, so each takes a few seconds on one CPU thread.
"""
from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

import compressor
from compress_base.errors import CompressError
from compressor import artifact
from compressor.counting import count_macs
from compressor.data import DataBundle, load_data
from compressor.models import ModelSpec, build_model
from compressor.nas.cell_search import best_cell, shrinkcnn_search
from compressor.nas.shrinkcnn import search_and_train_network
from compressor.networks.shrinkcnn import (
    SPEC_NAME,
    Cell,
    ShrinkCNN,
    auto_stem_stride,
    cell_leaves,
    deploy_network,
    full_edges,
    is_live,
    live_edges,
    node_ops,
    shrinkcnn,
    shrinkcnn_macs,
)
from compressor.runtime import Runtime
from compressor.space import SearchSpace

TINY = {"k": 2, "epochs": 1, "patience": 1, "batch_size": 16, "width": 4, "stem": 8}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def digits():
    bundle = load_data(None, resolution=16, seed=0)
    return DataBundle(Subset(bundle.train, list(range(64))), Subset(bundle.val, list(range(32))),
                      bundle.num_classes, bundle.class_names, bundle.source, 16)


# --------------------------------------------------------------------------- the DAG
def test_full_cell_has_28_edges():
    assert len(full_edges()) == 28 and full_edges()[:2] == [(0, 1), (0, 2)]
    assert len(ShrinkCNN().edges) == 28
    assert is_live(full_edges())
    assert cell_leaves(full_edges()) == [7]
    ops = node_ops()
    assert sorted(ops) == list(range(1, 8))
    assert sum(op == "sep3x3" for op in ops.values()) == 4 and sum(op == "conv1x1" for op in ops.values()) == 3


def test_live_edges_by_hand():
    # node 2 has no predecessor: its edge 2->3 is dead; 0->1->4 stays
    assert live_edges([(0, 1), (2, 3), (1, 4)]) == [(0, 1), (1, 4)]
    # removing 0->1 kills everything hanging only off node 1, transitively
    assert live_edges([(1, 2), (2, 3), (0, 3), (3, 5)]) == [(0, 3), (3, 5)]
    assert live_edges([(1, 2), (2, 3)]) == []  # node 0 has no successor: an empty cell
    assert live_edges([[0, 2], (0, 2), (0, 1)]) == [(0, 1), (0, 2)]  # lists, duplicates, order
    assert not is_live([(0, 1), (2, 3)]) and not is_live([])
    for bad in ([(2, 1)], [(0, 8)], [(0, "x")], [(0,)]):
        with pytest.raises(CompressError):
            live_edges(bad)


def _is_reachable_edge(edges, edge):
    """An independent check of the definition: source reachable from 0, target reaching a leaf."""
    succ = {}
    for i, j in edges:
        succ.setdefault(i, []).append(j)
    seen, todo = {0}, [0]
    while todo:
        for j in succ.get(todo.pop(), []):
            if j not in seen:
                seen.add(j)
                todo.append(j)

    def reaches_leaf(n):
        return n not in succ or any(reaches_leaf(m) for m in succ[n])

    return edge[0] in seen and reaches_leaf(edge[1])


def test_live_edges_property_on_random_removals():
    rng = random.Random(0)
    for _ in range(200):
        edges = full_edges()
        while edges:
            edges = live_edges([e for e in edges if e != rng.choice(edges)])
            assert all(_is_reachable_edge(edges, e) for e in edges)
            assert live_edges(edges) == edges


# --------------------------------------------------------------------------- the modules
def test_forward_shapes():
    for shape in ((3, 32, 32), (3, 16, 16), (3, 40, 28)):
        model = ShrinkCNN(num_classes=7).eval()
        assert model(torch.randn(2, *shape)).shape == (2, 7)
    model = shrinkcnn(num_classes=5, edges=[[0, 1], [1, 2], [0, 3]], cells_per_stage=2, width=8, stem=16).eval()
    assert model(torch.randn(3, 3, 24, 24)).shape == (3, 5)
    assert sum(isinstance(m, Cell) for m in model.modules()) == 6


def test_concatenation_widths_and_leaf_activations():
    cell = Cell(full_edges(), in_channels=32, channels=16)
    for j in range(1, 8):  # node j concatenates the input (32) and nodes 1..j-1 (16 each)
        node = cell.nodes[f"node{j}"]
        first = node.dw if node_ops()[j] == "sep3x3" else node.conv
        assert first.in_channels == 32 + 16 * (j - 1)
        assert isinstance(node.act, nn.Identity if j == 7 else nn.ReLU)
    assert cell.out_channels == 16

    edges = [(0, 1), (0, 2), (1, 3), (2, 3), (0, 4)]  # leaves 3 and 4
    cell = Cell(edges, in_channels=8, channels=4).eval()
    assert cell.leaves == [3, 4] and cell.out_channels == 8
    assert cell.nodes["node3"].dw.in_channels == 8  # concat of nodes 1 and 2
    assert cell.nodes["node3"].dw.groups == 8 and cell.nodes["node3"].pw.in_channels == 8
    assert cell.nodes["node4"].conv.in_channels == 8 and cell.nodes["node4"].conv.kernel_size == (1, 1)  # input only
    assert isinstance(cell.nodes["node1"].act, nn.ReLU) and isinstance(cell.nodes["node2"].act, nn.ReLU)
    assert isinstance(cell.nodes["node3"].act, nn.Identity) and isinstance(cell.nodes["node4"].act, nn.Identity)
    assert cell.proj is None  # 2 leaves x 4 = 8 = input channels
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        n1, n2 = cell.nodes["node1"](x), cell.nodes["node2"](x)
        n3, n4 = cell.nodes["node3"](torch.cat([n1, n2], 1)), cell.nodes["node4"](x)
        assert torch.allclose(cell(x), torch.cat([n3, n4], 1) + x, atol=1e-6)


def test_residual_projection_where_channels_differ():
    cell = Cell([(0, 1)], in_channels=32, channels=16).eval()
    assert isinstance(cell.proj.conv, nn.Conv2d) and isinstance(cell.proj.bn, nn.BatchNorm2d)
    assert (cell.proj.conv.in_channels, cell.proj.conv.out_channels, cell.proj.conv.kernel_size) == (32, 16, (1, 1))
    x = torch.randn(2, 32, 5, 5)
    with torch.no_grad():
        assert torch.allclose(cell(x), cell.nodes["node1"](x) + cell.proj(x), atol=1e-6)
    model = ShrinkCNN()  # stem 32 -> 16 -> 32 -> 64: every stage's cell projects
    assert all(m.proj is not None for m in model.modules() if isinstance(m, Cell))


def test_closed_form_macs_match_the_counter():
    rng = random.Random(1)
    for _ in range(5):
        edges = live_edges(rng.sample(full_edges(), rng.randint(2, 28))) or [(0, 1)]
        for shape, stride in (((3, 32, 32), 1), ((3, 64, 48), 2), ((3, 96, 96), 4)):
            kw = dict(cells_per_stage=rng.randint(1, 2), width=rng.choice([4, 8]), stem=8, stem_stride=stride)
            model = shrinkcnn(10, edges=edges, **kw)
            assert shrinkcnn_macs(edges, shape, 10, **kw) == count_macs(model, shape)


# --------------------------------------------------------------------------- the search
def test_a_shrink_step_removes_edges_and_leaves_only_live_ones(digits):
    snaps = shrinkcnn_search(digits.train, digits.val, 10, (3, 16, 16), max_steps=2, runtime=Runtime(quiet=True),
                             **TINY)
    assert [s.step for s in snaps] == [0, 1, 2]
    assert len(snaps[0].edges) == 28 and snaps[0].removed is None
    for prev, snap in zip(snaps, snaps[1:]):
        before, after = {tuple(e) for e in prev.edges}, {tuple(e) for e in snap.edges}
        assert len(after) <= len(before) - 1
        assert tuple(snap.removed) in before and tuple(snap.removed) not in after
        assert after == before - {tuple(snap.removed)} - {tuple(e) for e in snap.dropped}
        assert is_live(snap.edges) and all(_is_reachable_edge(after, e) for e in after)
        assert len(snap.candidates) == 2
        assert snap.score == max(c["score"] for c in snap.candidates)
        assert snap.macs == shrinkcnn_macs(snap.edges, (3, 16, 16), 10, width=4, stem=8)
        log_macs = torch.log10(torch.tensor(float(snap.macs))).item()
        assert snap.score == pytest.approx(snap.accuracy - 0.1 * (log_macs - 6))
    assert best_cell(snaps).score == max(s.score for s in snaps)
    json.dumps([s.to_dict() for s in snaps])  # snapshots are plain data
    again = shrinkcnn_search(digits.train, digits.val, 10, (3, 16, 16), max_steps=2, runtime=Runtime(quiet=True),
                             **TINY)
    assert [(s.edges, s.accuracy) for s in again] == [(s.edges, s.accuracy) for s in snaps]  # seeded


def test_search_stops_at_the_floor(digits):
    snaps = shrinkcnn_search(digits.train, digits.val, 10, (3, 16, 16), floor=27, score_initial=False,
                             runtime=Runtime(seed=1, quiet=True), **TINY)
    assert len(snaps) == 1 and len(snaps[0].edges) <= 27


# --------------------------------------------------------------------------- deployment
def test_deployed_network_meets_its_budget():
    edges = [(0, 1), (0, 2), (1, 3), (2, 3), (0, 4)]
    for shape, budget in (((3, 32, 32), 5_000_000), ((3, 224, 224), 300_000_000)):
        model, spec = deploy_network(edges, budget, shape, 10)
        macs = count_macs(model, shape)
        assert macs <= budget and macs == shrinkcnn_macs(edges, shape, 10, **{k: v for k, v in spec.kwargs.items()
                                                                               if k != "edges"})
        # the largest on the grid: no (cells, width) pair with more MACs fits
        others = [shrinkcnn_macs(edges, shape, 10, cells_per_stage=c, width=w, stem=2 * w,
                                 stem_stride=auto_stem_stride(shape))
                  for c in (1, 2, 3, 4) for w in (8, 16, 24, 32, 40, 48, 64, 80, 96, 128)]
        assert macs == max(m for m in others if m <= budget)
    assert auto_stem_stride((3, 32, 32)) == 1 and auto_stem_stride((3, 224, 224)) == 4
    with pytest.raises(CompressError, match="budget"):
        deploy_network(edges, 1000, (3, 32, 32), 10)


def test_spec_rebuilds_the_same_network(tmp_path):
    edges = [(0, 1), (0, 2), (1, 3), (2, 3), (0, 4)]
    torch.manual_seed(0)
    model, spec = deploy_network(edges, 3_000_000, (3, 32, 32), 10)
    assert spec.name == SPEC_NAME
    spec = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))  # JSON data only
    rebuilt = build_model(spec).eval()
    assert rebuilt.edges == model.edges
    rebuilt.load_state_dict(model.state_dict())  # strict: same names and shapes
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    # saved and loaded like any compressed model: spec + full architecture + state_dict
    space = SearchSpace.build(model, (3, 32, 32), spec.name)
    artifact.save(model, space.full(), spec, tmp_path)
    loaded = compressor.load(tmp_path)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_search_and_train_network_end_to_end(digits):
    model, spec, snaps, training = search_and_train_network(digits, 20_000_000, (3, 32, 32),
                                                            options={**TINY, "max_steps": 1}, epochs=1, batch_size=16)
    assert len(snaps) == 2 and [r["epoch"] for r in training] == [1] and 0 <= training[0]["val_acc"] <= 1
    assert [list(e) for e in model.edges] == [list(e) for e in best_cell(snaps).edges]
    assert count_macs(model, (3, 32, 32)) <= 20_000_000
    assert build_model(spec)(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(CompressError):
        search_and_train_network(digits, 2_000_000, options={"bogus": 1})

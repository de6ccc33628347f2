"""Latency predictor (compressor.latency): interpolation, channel counts, expectation, cache, calibration.

Most tests time nothing: a *fake runner* reads each ONNX graph it is given and returns a latency
computed from it (``PER_MAC`` ms per multiply-accumulate of its Conv/MatMul/Gemm nodes), plus a
fixed cost for single-layer graphs and ``A * cost + B`` for whole models. With no channel block,
a layer's cost is bilinear in (C_in, C_out), so the table interpolates it exactly and the
calibration must recover A and B. One end-to-end test measures for real with onnxruntime.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
import torchvision

from compress_base.errors import CompressError
from compressor.latency import (
    LatencyModel,
    LatencyTable,
    build_latency_model,
    evaluate_predictor,
    fit_affine,
    fit_calibration,
    grid_points,
    hardware_fingerprint,
    measure_architectures,
    trace_layers,
)
from compressor.latency.evaluate import spearman
from compressor.latency.layers import effective_channels
from compressor.latency.predictor import bilinear_np, bilinear_torch
from compressor.space import SearchSpace
from compressor.surgery import materialize
from exporters.onnx_export import export_onnx
from profiles import load_profile

from conftest import SMALL_SHAPE, random_architecture

pytestmark = pytest.mark.usefixtures("single_thread")

A, B, NULL, PER_MAC = 1.3, 0.2, 0.01, 1e-6
PROFILE = load_profile("cpu")


# --------------------------------------------------------------------------- fake target
def graph_macs(path) -> float:
    """MACs of the Conv/MatMul/Gemm nodes of an ONNX file (shapes from ONNX shape inference)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    inits = {i.name: list(i.dims) for i in g.initializer}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*g.value_info, *g.output, *g.input]}
    total = 0.0
    for n in g.node:
        if n.op_type in ("Conv", "MatMul", "Gemm") and n.input[1] in inits:
            out = shapes[n.output[0]]
            positions = np.prod(out[2:]) if n.op_type == "Conv" else np.prod(out[1:-1] or [1])
            total += np.prod(inits[n.input[1]]) * positions
    return float(total)


class FakeRunner:
    """Deterministic 'measurements' read off the graphs; counts its calls."""

    runtime = "onnxruntime-cpu"

    def __init__(self):
        self.calls: list[str] = []

    def measure(self, model, input_shape, batch=1, warmup=0, runs=1):
        name = Path(model).name
        self.calls.append(name)
        cost = PER_MAC * graph_macs(model)
        return SimpleNamespace(p50=A * cost + B if name.startswith("arch") else cost + NULL)


class Refuse:
    runtime = "onnxruntime-cpu"

    def measure(self, *a, **k):
        raise AssertionError("nothing may be measured here")


def fake_build(space, model, path, runner=None, **kw):
    kw = {"grid": 3, "rounds": 1, "calibration_archs": 5, "block": 1, **kw}
    return build_latency_model(space, model, PROFILE, path, runner=runner or FakeRunner(), **kw)


@pytest.fixture(scope="module")
def r18(zoo):
    return zoo("resnet18")


@pytest.fixture(scope="module")
def built(r18, tmp_path_factory):
    """resnet18 at 3x64x64 on the fake target; the runner and table file kept for inspection."""
    path = tmp_path_factory.mktemp("lut") / "table.json"
    runner = FakeRunner()
    lat = fake_build(r18.space, r18.model, path, runner)
    return SimpleNamespace(lat=lat, path=path, runner=runner)


def fake_ms(space, model, arch, tmp: Path) -> float:
    """What the fake target 'measures' for a whole architecture."""
    path = export_onnx(materialize(space, model, arch), space.input_shape, tmp / "arch.onnx")
    return A * PER_MAC * graph_macs(path) + B


# --------------------------------------------------------------------------- interpolation
def test_bilinear_exact_at_grid_points_and_linear_between():
    gin = np.array([[8.0, 16.0, 32.0]])
    gout = np.array([[8.0, 24.0, 24.0]])  # two points, padded by repeating the last
    vals = np.array([[[1.0, 2.0, 2.0], [3.0, 4.0, 4.0], [5.0, 8.0, 8.0]]])

    def at(ci, co):
        return float(bilinear_np(gin, gout, vals, np.array([ci], float), np.array([co], float))[0])

    for i, ci in enumerate([8, 16, 32]):
        for o, co in enumerate([8, 24]):
            assert at(ci, co) == vals[0, i, o]
    assert at(24, 8) == pytest.approx(4.0)  # halfway between 3 and 5
    assert at(16, 16) == pytest.approx(3.5)  # halfway between 3 and 4
    assert at(24, 16) == pytest.approx((3 + 4 + 5 + 8) / 4)  # centre of the cell
    assert at(20, 12) == pytest.approx(0.75 * (0.75 * 3 + 0.25 * 4) + 0.25 * (0.75 * 5 + 0.25 * 8))
    assert at(4, 100) == pytest.approx(2.0) and at(64, 100) == pytest.approx(8.0)  # clamped to the grid
    t = bilinear_torch(*(torch.tensor(x) for x in (gin, gout, vals)), torch.tensor([20.0]), torch.tensor([12.0]))
    assert float(t[0]) == pytest.approx(at(20, 12))


def test_grid_points_and_channel_block():
    assert grid_points(8, 64, 5, 16) == [8, 16, 32, 48, 64]
    assert grid_points(56, 512, 5, 8) == [56, 168, 288, 400, 512]
    assert grid_points(3, 3, 5, 16) == [3]
    assert grid_points(8, 64, 2, 16) == [8, 64]
    # a runtime that pads to 16 channels: 40 and 48 cost the same, 56 costs what 64 does
    c = effective_channels(np.array([8.0, 40, 48, 56, 64, 100]), 16.0, 100.0, 16)
    assert c.tolist() == [16, 48, 48, 64, 64, 100]


def test_fit_affine_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.5, 20, size=8)
    a, b = fit_affine(raw, 1.7 * raw + 0.35)
    assert a == pytest.approx(1.7, rel=1e-9) and b == pytest.approx(0.35, rel=1e-8)
    noisy = (1.7 * raw + 0.35) * rng.uniform(0.98, 1.02, size=8)
    a, b = fit_affine(raw, noisy)
    assert a == pytest.approx(1.7, rel=0.05)
    assert fit_affine([2.0], [3.0]) == (1.5, 0.0)
    # with the weight-streaming term: measured = a * table + c * weight_mb + b
    mb = rng.uniform(1, 40, size=8)
    a, c, b = fit_calibration(np.stack([raw, mb], 1), 1.1 * raw + 0.04 * mb + 0.2)
    assert (a, c, b) == pytest.approx((1.1, 0.04, 0.2), rel=1e-8)
    a, c, b = fit_calibration(np.stack([raw, mb], 1), 1.1 * raw - 0.04 * mb + 5)  # c < 0: no such term
    assert c == 0 and a > 0
    assert spearman([1, 2, 3], [10, 30, 20]) == pytest.approx(0.5)


# --------------------------------------------------------------------------- channel counts
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_layer_channels_match_the_materialized_model(zoo, name):
    e = zoo(name)
    layers, dims = trace_layers(e.space, e.model)
    arch = random_architecture(e.space, seed=3)
    widths, kept = e.space.encode(arch)
    d = dims.dims(widths)
    mods = dict(materialize(e.space, e.model, arch).named_modules())
    checked = 0
    for lay in layers:
        if lay.block >= 0 and not kept[lay.block]:
            continue
        m = mods[lay.name]
        if isinstance(m, torch.nn.Linear):
            assert (int(d[lay.dim_in]), int(d[lay.dim_out])) == (m.in_features, m.out_features), lay.name
        else:
            assert int(d[lay.dim_out]) == m.out_channels, lay.name
            assert (lay.config.op == "dwconv") == (m.groups == m.out_channels > 1), lay.name
            if lay.config.op == "conv":
                assert int(d[lay.dim_in]) == m.in_channels, lay.name
        checked += 1
    assert checked >= 10


# --------------------------------------------------------------------------- calibration, prediction
def test_calibration_recovers_a_and_b_on_the_fake_target(r18, built, tmp_path):
    lat = built.lat
    assert lat.a == pytest.approx(A, rel=1e-6) and lat.b == pytest.approx(B, rel=1e-5)
    assert abs(lat.c) < 1e-9  # the fake target reads no weights from memory
    cal = lat.calibration()
    assert cal["max_rel_err"] < 1e-6 and len(cal["points"]) == 5
    for seed in (11, 12):
        arch = random_architecture(r18.space, seed)
        assert lat.predict(arch) == pytest.approx(fake_ms(r18.space, r18.model, arch, tmp_path), rel=1e-6)


def test_dropped_blocks_cost_nothing(r18, built):
    space = r18.space
    arch = space.uniform(0.5)
    dropped = space.architecture(arch.widths, {b.name: False for b in space.blocks})
    rows = built.lat.details(dropped)
    assert all(r["ms"] == 0 for r in rows if r["block"] >= 0)
    assert built.lat.predict(dropped) < built.lat.predict(arch)


def test_predict_is_fast(r18, built):
    arch = random_architecture(r18.space, 5)
    built.lat.predict(arch)
    start = time.perf_counter()
    for _ in range(200):
        built.lat.predict(arch)
    assert (time.perf_counter() - start) / 200 < 1e-3


# --------------------------------------------------------------------------- expectation (TAS)
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_expected_latency_is_predict_at_one_hot_and_has_gradients(zoo, name, tmp_path):
    e = zoo(name)
    space = e.space
    lat = fake_build(space, e.model, tmp_path / "t.json", calibration_archs=3, block=16)  # staircase on
    for seed, c in ((1, 0.0), (2, 0.05)):  # c: the weight-streaming term of the calibration
        lat.c = c
        arch = random_architecture(space, seed)
        widths, kept = space.encode(arch)
        probs = [None if not g.is_decision else torch.nn.functional.one_hot(
            torch.tensor(g.choices.index(int(w))), len(g.choices)).double() for g, w in zip(space.groups, widths)]
        keep = torch.tensor(kept, dtype=torch.float64)
        assert float(lat.expected(probs, keep)) == pytest.approx(lat.predict(arch), rel=1e-9)
    logits = [torch.zeros(len(g.choices), dtype=torch.float64, requires_grad=True) if g.is_decision else None
              for g in space.groups]
    keep = torch.full((len(space.blocks),), 0.7, dtype=torch.float64, requires_grad=True)
    value = lat.expected([None if x is None else torch.softmax(x, 0) for x in logits], keep)
    value.backward()
    grads = [x.grad for x in logits if x is not None]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert keep.grad is not None and (keep.grad > 0).all()  # keeping a block never makes it faster
    full = lat.predict(space.full())
    assert 0 < value.item() < full


# --------------------------------------------------------------------------- the table file
def test_cache_round_trip_reuses_measurements(r18, built, tmp_path):
    n_layers = sum(1 for c in built.runner.calls if not c.startswith("arch"))
    assert n_layers == len(set(built.lat.keys()))  # one call per distinct layer config (rounds=1)
    assert sum(1 for c in built.runner.calls if c.startswith("arch")) == 5
    (data,) = json.loads(built.path.read_text())["tables"]
    assert data["profile"] == "cpu" and data["hardware"]["runtime"] == "onnxruntime-cpu"
    table = LatencyTable.load(built.path, "cpu", built.lat.table.hardware)
    assert table.entries == built.lat.table.entries
    again = FakeRunner()
    lat2 = fake_build(r18.space, r18.model, built.path, again)
    assert again.calls == []  # everything, calibration included, came from the file
    arch = random_architecture(r18.space, 7)
    assert lat2.predict(arch) == pytest.approx(built.lat.predict(arch), rel=1e-12)
    # another model with the same layer configs: no layer is measured again, only its calibration
    other = torchvision.models.resnet34().eval()
    space34 = SearchSpace.build(other, SMALL_SHAPE, "resnet34")
    copy = tmp_path / "t.json"
    copy.write_text(built.path.read_text())
    third = FakeRunner()
    lat34 = fake_build(space34, other, copy, third)
    assert [c for c in third.calls if not c.startswith("arch")] == []
    assert len(third.calls) == 5
    assert len(LatencyTable.load(copy).calibrations) == 2
    assert lat34.a == pytest.approx(A, rel=1e-6)


def test_table_for_another_profile_or_hardware_is_refused(r18, built):
    with pytest.raises(CompressError, match=r"measured for profile cpu on .* not for gpu: build one with "
                                            r"`compress lut --target gpu`"):
        LatencyTable.load(built.path, "gpu")
    hw = dict(built.lat.table.hardware, device="Some Other CPU (64 cpus)")
    with pytest.raises(CompressError, match="not for cpu on Some Other CPU"):
        LatencyTable.load(built.path, "cpu", hw)
    with pytest.raises(CompressError, match="compress lut --target cpu"):
        fake_build(r18.space, r18.model, built.path, threads=4)  # another thread count: another table
    gpu = load_profile("gpu")
    with pytest.raises(CompressError, match="not for gpu"):
        build_latency_model(r18.space, r18.model, gpu, built.path, offline=True)


def test_offline_table_measures_nothing(r18, built, tmp_path):
    lat = build_latency_model(r18.space, r18.model, PROFILE, built.path, offline=True, runner=Refuse())
    arch = random_architecture(r18.space, 8)
    assert lat.predict(arch) == pytest.approx(built.lat.predict(arch), rel=1e-12)
    # the model's own file (to_dict) rebuilds the same predictor
    again = LatencyModel.from_dict(built.lat.to_dict(), r18.space, r18.model, PROFILE)
    assert again.predict(arch) == pytest.approx(built.lat.predict(arch), rel=1e-12)
    # without this model's calibration, the pooled fit of the others is used
    data = built.lat.to_dict()
    (section,) = data["tables"]
    (cal,) = section["calibrations"].values()
    section["calibrations"] = {"some-other-model": cal}
    path = tmp_path / "pooled.json"
    path.write_text(json.dumps(data))
    pooled = build_latency_model(r18.space, r18.model, PROFILE, path, offline=True)
    assert pooled.a == pytest.approx(A, rel=1e-6)
    # a table lacking layers cannot serve offline
    section["entries"] = dict(list(section["entries"].items())[:5])
    path.write_text(json.dumps(data))
    with pytest.raises(CompressError, match="lacks .* layer measurements"):
        build_latency_model(r18.space, r18.model, PROFILE, path, offline=True)
    path.write_text("{not json")
    with pytest.raises(CompressError, match="cannot read latency table"):
        LatencyTable.load(path)


@pytest.mark.parametrize("quiet", [False, True, None])
def test_the_measuring_bar_follows_the_runtime(quiet, monkeypatch):
    """A progress bar over the rounds shows in a terminal for a Runtime that is not quiet; none for a
    quiet one or without one (quiet None: no runtime given)."""
    import io
    import sys

    from compressor.latency.probes import Probe, measure_probes
    from compressor.runtime import Runtime

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    class ModuleRunner:
        runtime = "torch-cpu"  # times the module: no ONNX file is written

        def measure(self, model, input_shape, batch=1, warmup=0, runs=1):
            return SimpleNamespace(p50=float(model))

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    probes = [Probe(f"p{i}", (3, 4, 4), lambda p: p, lambda i=i: i + 1) for i in range(2)]
    runtime = None if quiet is None else Runtime(quiet=quiet)
    out = measure_probes(ModuleRunner(), probes, batch=1, warmup=0, runs=1, rounds=3, runtime=runtime)
    assert out == [[1.0] * 3, [2.0] * 3]
    assert ("latency table" in screen.getvalue()) == (quiet is False)


def test_hardware_fingerprint_names_what_matters():
    hw = hardware_fingerprint("onnxruntime-cpu", threads=1, batch=1, clock="cpu", block=16)
    assert {"device", "runtime", "runtime_version", "threads", "batch", "precision", "clock",
            "channel_block"} <= set(hw)
    assert hw["threads"] == 1 and hw["runtime_version"]


def test_the_fingerprint_holds_the_precision_the_runtime_times():
    fp32 = hardware_fingerprint("onnxruntime-cpu", threads=1, clock="cpu", block=16)
    int8 = hardware_fingerprint("onnxruntime-cpu", threads=1, precision="int8", clock="cpu", block=16)
    assert fp32["precision"] == "fp32" and int8 == {**fp32, "precision": "int8"}  # another table, nothing else
    assert hardware_fingerprint("torch-cpu", precision="int8")["precision"] == "fp32"  # torch times fp32 modules


# --------------------------------------------------------------------------- measured for real
@pytest.mark.slow
def test_end_to_end_on_onnxruntime_ranks_architectures(r18, tmp_path):
    """resnet18 at 3x64x64, timed by onnxruntime (one thread, CPU clock, few points and runs):
    predictions must order architectures spanning a 5x MAC range as the measurements do."""
    space, model = r18.space, r18.model
    lat = build_latency_model(space, model, PROFILE, tmp_path / "lut.json", calibration_archs=4, grid=3, rounds=3,
                              warmup=2, runs=5, threads=1, clock="cpu")
    rng = np.random.default_rng(4)
    archs = [space.uniform(r) for r in (0.3, 0.55, 0.8)] + [space.full()]
    archs += [space.architecture(space.uniform(0.6).widths, {b.name: bool(rng.random() < 0.5) for b in space.blocks})]
    macs = [space.macs(a) for a in archs]
    assert max(macs) / min(macs) > 5
    measured = measure_architectures(space, model, archs, lat_runner(), warmup=2, runs=5, rounds=3)
    predicted = [lat.predict(a) for a in archs]
    assert spearman(predicted, measured) > 0.8, (predicted, measured)
    assert all(p > 0 for p in predicted)
    report = evaluate_predictor(lat, space, model, PROFILE, n=3, seed=9)
    assert report["n"] == 3 and 0 <= report["within_10pct"] <= 1 and len(report["pairs"]) == 3
    assert 0.5 < report["drift"] < 2


def lat_runner():
    from exporters.runners import make_runner

    return make_runner("onnxruntime-cpu", threads=1, clock="cpu")


@pytest.mark.parametrize("method", ["uniform", "greedy", "tas", "asng",
                                    pytest.param("autoshrink", marks=pytest.mark.slow)])
def test_every_method_meets_a_latency_budget(built, r18, method):
    """Each searcher reads the latency bound through Budget exactly like MACs (TAS through the
    differentiable expected latency), so its result's predicted latency is within the budget."""
    from compressor.budget import Budget
    from compressor.data import load_data
    from compressor.search import SEARCHERS, SearchContext

    lat, space = built.lat, r18.space
    full_ms = lat.predict(space.full())
    budget = Budget(latency_ms=0.5 * full_ms).with_latency_model(lat)
    data = load_data(None, resolution=16, seed=0)
    options = {"tas": {"steps_per_epoch": 2, "refine_images": 32}, "asng": {"steps_per_epoch": 2, "refine_images": 32},
               "greedy": {"images": 32},
               "autoshrink": {"k": 2, "finetune_steps": 1, "eval_batches": 1, "commit_steps": 1,
                              "calib_batches": 1}}.get(method, {})
    ctx = SearchContext(model=r18.model, train_data=data.train, val_data=data.val, batch_size=32, epochs=1,
                        quiet=True, options=options)
    arch = SEARCHERS[method](space, budget, ctx).architecture
    assert lat.predict(arch) <= budget.latency_ms < full_ms


@pytest.mark.slow
def test_autoshrink_remeasures_each_committed_step(built, r18):
    """With a latency budget and a target to measure on, every committed architecture is measured
    and the prediction rescaled to it, so later steps steer by the target's figures."""
    import copy

    from compressor.budget import Budget
    from compressor.data import load_data
    from compressor.search import SearchContext, autoshrink_search

    lat, space = copy.deepcopy(built.lat), r18.space
    seen = []

    def measure(arch):  # a target 1.5x slower than the table says
        seen.append(arch)
        return 1.5 * built.lat.predict(arch)

    budget = Budget(latency_ms=0.8 * lat.predict(space.full())).with_latency_model(lat)
    data = load_data(None, resolution=16, seed=0)
    ctx = SearchContext(model=r18.model, train_data=data.train, val_data=data.val, batch_size=32, epochs=1,
                        quiet=True, measure=measure,
                        options={"k": 2, "finetune_steps": 1, "eval_batches": 1, "commit_steps": 1,
                                 "calib_batches": 1})
    result = autoshrink_search(space, budget, ctx)
    steps = [h for h in result.history if "measured_ms" in h]
    assert steps and len(seen) == len(steps)
    rescaled = result.budget.latency  # a new model: the one passed in is left as it was
    assert rescaled.predict(result.architecture) == pytest.approx(1.5 * built.lat.predict(result.architecture))
    assert rescaled.predict(result.architecture) <= budget.latency_ms
    assert lat.predict(result.architecture) == built.lat.predict(result.architecture)


@pytest.mark.slow
def test_search_for_a_board_with_a_table_measured_there(tmp_path):
    """--target jetson-orin-nano on this machine: a latency budget is refused without a table; with a
    table measured on the board (faked here), the search uses it, nothing is measured here, and the
    report says so."""
    import json

    from click.testing import CliRunner

    from compressor.cli import main
    from compressor.models import resolve_model
    from profiles import load_profile

    board = load_profile("jetson-orin-nano")
    args = ["--target", "jetson-orin-nano", "--input-shape", "3x64x64", "--train-resolution", "16",
            "--teacher-epochs", "0", "--epochs", "0", "-q"]
    refused = CliRunner().invoke(main, [*args, "--budget-latency", "1ms", "--out", str(tmp_path / "no")])
    assert refused.exit_code == 2 and "Jetson Orin Nano board" in refused.output

    net, _, _ = resolve_model("resnet18", None, 10)
    space = SearchSpace.build(net, (3, 64, 64), "resnet18", channel_multiple=board.channel_multiple)
    table = tmp_path / "orin.json"
    lat = build_latency_model(space, net, board, table, runner=FakeRunner(), grid=3, rounds=1,
                              calibration_archs=5, block=1)
    budget_ms = 0.5 * lat.predict(space.full())
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [*args, "--budget-latency", f"{budget_ms}ms", "--latency-table", str(table),
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["latency"] == {"compressed": None, "baseline": None}
    assert report["predicted_latency_ms"]["compressed"] <= budget_ms
    assert any("compress bench" in n for n in report["notes"])
    assert "predicted by the table" in (out / "report.md").read_text()
    # the device's measurement is merged in afterwards (a CPU bench stands in for the board's here)
    bench = tmp_path / "device.bench.json"
    assert CliRunner().invoke(main, ["bench", str(out / "model.onnx"), "--target", "cpu", "--runs", "3",
                                     "--warmup", "0", "--out", str(bench), "-q"]).exit_code == 0
    merged = CliRunner().invoke(main, ["report", str(out), str(bench), "--out", str(tmp_path / "merged"), "-q"])
    assert merged.exit_code == 0, merged.output
    rows = json.loads((tmp_path / "merged" / "merged.json").read_text())["runs"][0]["latency"]
    assert len(rows) == 1 and rows[0]["compressed"]["p50"] > 0

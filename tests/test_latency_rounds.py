"""A run's latency: interleaved rounds over every model (original, compressed, low precision) and the
log lines naming the file they measured (per-epoch lines above the progress bar: test_progress_lines.py)."""
from __future__ import annotations

import logging

from compressor import target
from exporters.stats import LatencyStats
from profiles import load_profile


class FakeRunner:
    """Records which file it timed; each file takes its own fixed time per run."""

    calls: list = []

    def __init__(self, profile_nodes=0):
        self.profile_nodes = profile_nodes

    def measure(self, path, shape, batch, warmup, runs):
        FakeRunner.calls.append((path.name, runs, self.profile_nodes))
        ms = {"model.onnx": 2.0, "baseline.onnx": 8.0, "model.int8.onnx": 1.0}[path.name]
        settings = {"slowest_nodes": [{"node": "conv", "op": "Conv", "mean_ms": ms, "share": 1.0}]} \
            if self.profile_nodes else {}
        return LatencyStats.from_times([ms] * runs, batch=batch, input_shape=tuple(shape), warmup=warmup,
                                       runtime="onnxruntime-cpu", device="cpu", settings=settings)


def test_rounds_interleave_every_model(tmp_path, monkeypatch, caplog):
    FakeRunner.calls = []
    monkeypatch.setattr(target, "make_runner", lambda runtime, threads, precision, profile_nodes=0:
                        FakeRunner(profile_nodes))
    files = {"compressed": tmp_path / "model.onnx", "baseline": tmp_path / "baseline.onnx",
             "precision": tmp_path / "model.int8.onnx"}
    with caplog.at_level(logging.INFO, logger="compressor.target"):
        out = target.measure_interleaved(files, load_profile("cpu"), (3, 8, 8), runs=12, slowest="compressed",
                                         rounds=3)
    names = [name for name, _, _ in FakeRunner.calls]
    assert names == ["model.onnx", "baseline.onnx", "model.int8.onnx"] * 3  # interleaved, not one file after another
    assert {runs for _, runs, _ in FakeRunner.calls} == {4}  # 12 runs split over 3 rounds
    assert [nodes for name, _, nodes in FakeRunner.calls if name == "model.onnx"] == [0, 0, 10]  # profiled last
    assert out["compressed"].runs == 12 and out["compressed"].rounds == [2.0, 2.0, 2.0]
    assert out["compressed"].settings["slowest_nodes"][0]["node"] == "conv"
    assert out["baseline"].p50 == 8.0 and out["precision"].p50 == 1.0
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith("latency of model.onnx (compressed, onnxruntime-cpu): p50 2.000 ms")
    assert lines[1].startswith("latency of baseline.onnx (baseline") and lines[2].startswith("latency of model.int8")


def test_tensorrt_builds_each_engine_once(tmp_path, monkeypatch):
    """On TensorRT every round times the same engine: one build per file, not one per round (checked
    against fakes: no TensorRT here)."""
    import exporters.tensorrt as trt

    built, timed = [], []
    monkeypatch.setattr(target, "choose_runtime", lambda profile: "tensorrt")
    monkeypatch.setattr(trt, "onnx_precision", lambda path: "int8" if "int8" in path.name else "fp32")
    monkeypatch.setattr(trt, "build_engine", lambda onnx, engine, precision, batch, input_shape:
                        built.append((onnx.name, engine.name, precision)) or engine.write_bytes(b"engine"))

    class Runner:
        def measure(self, path, shape, batch, warmup, runs):
            assert path.read_bytes() == b"engine"  # the engine built before the rounds
            timed.append(path.name)
            return LatencyStats.from_times([1.0] * runs, batch=batch, input_shape=tuple(shape), warmup=warmup,
                                           runtime="tensorrt", device="gpu")

    monkeypatch.setattr(target, "make_runner", lambda *a, **k: Runner())
    profile = load_profile("jetson-orin-nano")
    files = {"compressed": tmp_path / "model.onnx", "precision": tmp_path / "model.int8.onnx"}
    out = target.measure_interleaved(files, profile, (3, 8, 8), runs=6, rounds=3)
    assert built == [("model.onnx", "compressed.engine", profile.precision), ("model.int8.onnx", "precision.engine",
                                                                                None)]
    assert timed == ["compressed.engine", "precision.engine"] * 3 and out["precision"].rounds == [1.0] * 3


def test_real_runs_name_the_file(onnx_file, caplog):
    from conftest import TINY_SHAPE

    with caplog.at_level(logging.INFO):
        out = target.measure_interleaved({"compressed": onnx_file}, load_profile("cpu"), TINY_SHAPE, runs=4,
                                         slowest="compressed", rounds=2)
    stats = out["compressed"]
    assert stats.runs == 4 and len(stats.rounds) == 2 and stats.settings["slowest_nodes"]
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"latency of {onnx_file.name} (compressed") for m in messages)
    assert not any(m.startswith("onnxruntime-cpu: p50") for m in messages)  # no line without a file name

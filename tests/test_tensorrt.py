"""TensorRT engine building and timing.

Everything that does not need TensorRT runs here: argument checks, optimization-profile shapes,
dtype mapping, calibration batching and cache, timing-cache files, statistics from event times,
and the whole runner loop (binding, timing, outputs) against a fake engine and fake CUDA buffers.
The tests at the end build and time real engines and are skipped where TensorRT or a GPU is
missing.
"""
from __future__ import annotations

import importlib
import json
import logging
import pkgutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import exporters.tensorrt
from compress_base.errors import CompressError
from exporters.onnx_export import export_onnx
from exporters.stats import LatencyStats, summarize_ms
from exporters.tensorrt import (
    NOT_INSTALLED,
    CalibrationBatches,
    CalibratorCore,
    DeviceBuffer,
    HostBuffer,
    TrtRunner,
    assemble_stats,
    bind,
    build_engine,
    check_trt_version,
    compare_with_onnxruntime,
    describe_io,
    enum_name,
    format_parser_error,
    numpy_dtype,
    parse_batch_range,
    parse_sample_shape,
    parse_version,
    profile_shapes,
    read_timing_cache,
    resolve_input_shape,
    resolve_timing_cache,
    severity_level,
    tensorrt_available,
    time_engine,
    validate_build_args,
    write_bytes_atomic,
)

TRT_OK, TRT_REASON = tensorrt_available()
needs_trt = pytest.mark.skipif(not TRT_OK, reason=f"needs TensorRT >= 8.5 and a CUDA GPU: {TRT_REASON}")
SHAPE = (3, 16, 16)
TRT_MODULES = [exporters.tensorrt] + [
    importlib.import_module(f"exporters.tensorrt.{m.name}") for m in pkgutil.iter_modules(exporters.tensorrt.__path__)
]


def patch_trt(monkeypatch, name: str, value) -> None:
    """Replace ``name`` in every exporters.tensorrt module that binds it.

    Each module looks a name up in its own namespace (``from ... import`` copies the binding), so a
    fake must go wherever the name is bound, not only where it is defined.
    """
    patched = [m for m in TRT_MODULES if hasattr(m, name)]
    assert patched, f"no exporters.tensorrt module has {name}"
    for module in patched:
        monkeypatch.setattr(module, name, value)


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(8, 10),
    ).eval()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    return export_onnx(tiny_cnn(), SHAPE, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


# --------------------------------------------------------------------------------------------
# availability
# --------------------------------------------------------------------------------------------


def test_tensorrt_missing_here_gives_the_install_hint():
    if TRT_OK:
        pytest.skip("TensorRT is usable here; this checks the message without it")
    ok, reason = tensorrt_available()
    assert not ok and "\n" not in reason
    if "tensorrt" not in sys.modules:
        assert reason == NOT_INSTALLED


@pytest.mark.parametrize(
    "version, probe, ok, words",
    [
        ("8.2.1.8", ("pycuda", "pycuda"), False, ["8.2.1.8", "too old", "trtexec"]),
        ("10.3.0", (None, "torch finds no CUDA device"), False, ["10.3.0", "no CUDA device", "pycuda"]),
        ("10.3.0", ("pycuda", "pycuda"), True, ["10.3.0", "pycuda"]),
        ("8.6.2", ("torch", "torch 2.5 with CUDA 12.6"), True, ["8.6.2"]),
    ],
)
def test_tensorrt_available_with_a_fake_module(monkeypatch, version, probe, ok, words):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
    patch_trt(monkeypatch, "cuda_backend_probe", lambda: probe)
    got_ok, reason = tensorrt_available()
    assert got_ok is ok
    for w in words:
        assert w in reason
    assert "\n" not in reason


def test_versions():
    assert parse_version("10.3.0.26") == (10, 3, 0, 26)
    assert parse_version("8.6.1.post1") == (8, 6, 1)
    assert parse_version("unknown") == ()
    assert check_trt_version("8.5.2")[0] and check_trt_version("10.0.1")[0]
    assert not check_trt_version("8.4.3")[0] and not check_trt_version("7.1")[0]


# --------------------------------------------------------------------------------------------
# small pure helpers
# --------------------------------------------------------------------------------------------


class _Enum:
    def __init__(self, name):
        self.name = name


class _StrEnum:
    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


def test_dtype_mapping():
    assert numpy_dtype("FLOAT") == np.float32
    assert numpy_dtype(_Enum("HALF")) == np.float16
    assert numpy_dtype(_StrEnum("DataType.INT32")) == np.int32
    assert numpy_dtype("INT64") == np.int64 and numpy_dtype("BOOL") == np.bool_
    assert numpy_dtype("INT8") == np.int8 and numpy_dtype("UINT8") == np.uint8
    with pytest.raises(CompressError, match="BF16"):
        numpy_dtype("BF16")
    assert enum_name(_StrEnum("TensorIOMode.INPUT")) == "INPUT"


def test_severity_levels():
    assert severity_level("ERROR") == logging.ERROR
    assert severity_level("INTERNAL_ERROR") == logging.CRITICAL
    assert severity_level("WARNING") == logging.WARNING
    assert severity_level("INFO") == severity_level("VERBOSE") == logging.DEBUG


@pytest.mark.parametrize(
    "given, want",
    [(4, (4, 4, 4)), ((1, 1, 8), (1, 1, 8)), ([1, 4, 16], (1, 4, 16)), ("1,2,8", (1, 2, 8)),
     ("1:1:4", (1, 1, 4)), ("8", (8, 8, 8))],
)
def test_parse_batch_range(given, want):
    assert parse_batch_range(given) == want


@pytest.mark.parametrize("bad", [0, (2, 1, 8), (1, 8), (0, 1, 1), "a,b,c", True, (1.0, 2, 3), None])
def test_parse_batch_range_errors(bad):
    with pytest.raises(CompressError, match="MIN,OPT,MAX"):
        parse_batch_range(bad)


def test_parse_sample_shape():
    assert parse_sample_shape(None) is None
    assert parse_sample_shape([3, 224, 224]) == (3, 224, 224)
    for bad in ([], [3, 0, 4], "abc", [True, 2]):
        with pytest.raises(CompressError, match="positive integers"):
            parse_sample_shape(bad)


def test_profile_shapes_dynamic_batch():
    assert profile_shapes("input", (-1, 3, 224, 224), (1, 4, 8), None) == (
        (1, 3, 224, 224), (4, 3, 224, 224), (8, 3, 224, 224)
    )
    # a matching input_shape is fine, a different one names both shapes
    assert profile_shapes("input", (-1, 3, 32, 32), (1, 1, 2), (3, 32, 32))[2] == (2, 3, 32, 32)
    with pytest.raises(CompressError, match="takes 3x32x32 but input_shape is 3x224x224"):
        profile_shapes("input", (-1, 3, 32, 32), (1, 1, 2), (3, 224, 224))
    with pytest.raises(CompressError, match="3 dimensions"):
        profile_shapes("input", (-1, 3, 32, 32), (1, 1, 2), (32, 32))


def test_profile_shapes_dynamic_spatial_and_static():
    assert profile_shapes("x", (-1, 3, -1, -1), (1, 2, 4), (3, 96, 128)) == (
        (1, 3, 96, 128), (2, 3, 96, 128), (4, 3, 96, 128)
    )
    with pytest.raises(CompressError, match="dynamic dimensions"):
        profile_shapes("x", (-1, 3, -1, -1), (1, 2, 4), None)
    assert profile_shapes("x", (1, 3, 32, 32), (1, 1, 8), None) is None  # fully static: no profile
    assert profile_shapes("x", (2, 3, -1, -1), (1, 1, 8), (3, 8, 8)) == ((2, 3, 8, 8),) * 3
    with pytest.raises(CompressError, match="scalar"):
        profile_shapes("x", (), (1, 1, 1), None)


def test_resolve_input_shape():
    prof = ((1, 3, 16, 16), (2, 3, 16, 16), (8, 3, 16, 16))
    assert resolve_input_shape("in", (-1, 3, 16, 16), prof, 4) == (4, 3, 16, 16)
    assert resolve_input_shape("in", (-1, 3, 16, 16), prof, 4, (3, 16, 16)) == (4, 3, 16, 16)
    # the profile's shape only fills dynamic axes; static ones win
    assert resolve_input_shape("in", (-1, 3, 16, 16), prof, 1, None, (3, 224, 224)) == (1, 3, 16, 16)
    dyn = ((1, 3, 8, 8), (1, 3, 64, 64), (4, 3, 256, 256))
    assert resolve_input_shape("in", (-1, 3, -1, -1), dyn, 2, None, (3, 224, 224)) == (2, 3, 224, 224)
    with pytest.raises(CompressError, match="outside the engine's profile"):
        resolve_input_shape("in", (-1, 3, 16, 16), prof, 16)
    with pytest.raises(CompressError, match="takes 3x16x16, not 3x224x224"):
        resolve_input_shape("in", (-1, 3, 16, 16), prof, 1, (3, 224, 224))
    with pytest.raises(CompressError, match="fixed batch of 1"):
        resolve_input_shape("in", (1, 3, 16, 16), None, 2)
    with pytest.raises(CompressError, match="dynamic dimensions"):
        resolve_input_shape("in", (-1, 3, -1, -1), dyn, 1)
    with pytest.raises(CompressError, match="positive integer"):
        resolve_input_shape("in", (-1, 3, 16, 16), prof, 0)


def test_format_parser_error():
    class Full:
        def desc(self):
            return "Assertion failed: axis is out of range\nmore detail"

        def node(self):
            return 7

        def node_name(self):
            return "/layer1/Gather"

        def node_operator(self):
            return "Gather"

    class Old:  # TensorRT 8.x: no node_name/node_operator
        def desc(self):
            return "unsupported op"

        def node(self):
            return -1

        def node_name(self):
            raise AttributeError("node_name")

    class Plain:
        def __str__(self):
            return "In node 3 (parseGraph): INVALID_NODE: bad"

    assert format_parser_error(Full()) == "node 7 '/layer1/Gather' (Gather): Assertion failed: axis is out of range"
    assert format_parser_error(Old()) == "unsupported op"
    assert format_parser_error(Plain()) == "In node 3 (parseGraph): INVALID_NODE: bad"


# --------------------------------------------------------------------------------------------
# build arguments
# --------------------------------------------------------------------------------------------


def test_validate_build_args(onnx_file, tmp_path):
    args = validate_build_args(onnx_file, tmp_path / "m.engine", "fp16", (1, 2, 4), (3, 16, 16), 256,
                               tmp_path / "trt.cache")
    assert args.batch == (1, 2, 4) and args.input_shape == SHAPE
    assert args.workspace_bytes == 256 * 2**20 and args.timing_cache == tmp_path / "trt.cache"
    assert args.calibration_cache is None


@pytest.mark.parametrize(
    "change, match",
    [
        ({"precision": "fp8"}, "precision 'fp8'"),
        ({"workspace_mb": 0}, "workspace"),
        ({"workspace_mb": 1.5}, "workspace"),
        ({"batch": (4, 2, 1)}, "MIN,OPT,MAX"),
        ({"input_shape": (3, -1, 4)}, "positive integers"),
        ({"calibration_batch_size": 0}, "calibration batch size"),
    ],
)
def test_validate_build_args_errors(onnx_file, tmp_path, change, match):
    kwargs = dict(onnx_path=onnx_file, engine_path=tmp_path / "m.engine") | change
    with pytest.raises(CompressError, match=match):
        validate_build_args(**kwargs)


def test_validate_build_args_paths(onnx_file, tmp_path):
    with pytest.raises(CompressError, match="does not exist"):
        validate_build_args(tmp_path / "missing.onnx", tmp_path / "m.engine")
    with pytest.raises(CompressError, match="is the ONNX file"):
        validate_build_args(onnx_file, onnx_file)
    with pytest.raises(CompressError, match="is a directory"):
        validate_build_args(onnx_file, tmp_path)
    with pytest.raises(CompressError, match="timing cache .* is a directory"):
        validate_build_args(onnx_file, tmp_path / "m.engine", timing_cache=tmp_path)


def test_int8_needs_calibration_data_or_cache(onnx_file, tmp_path):
    engine = tmp_path / "m.engine"
    with pytest.raises(CompressError) as info:
        validate_build_args(onnx_file, engine, "int8")
    msg = str(info.value)
    assert "INT8 needs calibration data" in msg and "m.calib" in msg and "\n" not in msg
    args = validate_build_args(onnx_file, engine, "int8", calibration_batches=[np.zeros((1, *SHAPE))])
    assert args.calibration_cache == tmp_path / "m.calib"  # default: next to the engine
    cache = tmp_path / "given.calib"
    cache.write_bytes(b"TRT-100-EntropyCalibration2\n")
    args = validate_build_args(onnx_file, engine, "int8", calibration_cache=cache)  # cache alone is enough
    assert args.calibration_cache == cache


def test_build_engine_checks_arguments_before_tensorrt(onnx_file, tmp_path):
    with pytest.raises(CompressError, match="INT8 needs calibration data"):
        build_engine(onnx_file, tmp_path / "m.engine", precision="int8")
    with pytest.raises(CompressError, match="does not exist"):
        build_engine(tmp_path / "nope.onnx", tmp_path / "m.engine")


def test_build_engine_without_tensorrt(onnx_file, tmp_path):
    if TRT_OK or "tensorrt" in sys.modules:
        pytest.skip("TensorRT is importable here; this checks the message without it")
    with pytest.raises(CompressError) as info:
        build_engine(onnx_file, tmp_path / "m.engine", input_shape=SHAPE)
    assert str(info.value) == NOT_INSTALLED
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_timing_cache_files(tmp_path):
    assert resolve_timing_cache(None) is None
    path = resolve_timing_cache(tmp_path / "sub" / "trt.cache")
    assert read_timing_cache(path) == b"" and read_timing_cache(None) == b""
    write_bytes_atomic(path, bytearray(b"\x01\x02cache"))
    assert read_timing_cache(path) == b"\x01\x02cache"
    write_bytes_atomic(path, memoryview(b"new"))
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["trt.cache"]  # no temporary left behind


# --------------------------------------------------------------------------------------------
# INT8 calibration data
# --------------------------------------------------------------------------------------------


def _samples(n, shape=(2, 3, 3), start=0):
    return np.arange(start, start + n * int(np.prod(shape)), dtype=np.float64).reshape(n, *shape)


def test_calibration_batches_repack_in_order():
    parts = [_samples(3), _samples(5, start=54), _samples(1, start=144)[0]]  # 3 + 5 + 1 single sample
    batches = CalibrationBatches(parts, batch_size=4, sample_shape=(2, 3, 3))
    got = list(batches)
    assert [b.shape for b in got] == [(4, 2, 3, 3), (4, 2, 3, 3)]
    assert all(b.dtype == np.float32 and b.flags.c_contiguous for b in got)
    flat = np.concatenate(got).reshape(-1)
    assert np.array_equal(flat, np.arange(8 * 18, dtype=np.float32))  # first 8 samples, in order
    assert (batches.samples, batches.batches, batches.dropped) == (9, 2, 1)


def test_calibration_batches_accept_loader_pairs_tensors_and_stop_early():
    loader = [(torch.ones(2, 2, 3, 3), torch.tensor([0, 1])) for _ in range(5)]
    batches = CalibrationBatches(loader, batch_size=3, sample_shape=(2, 3, 3), max_batches=2)
    got = list(batches)
    assert len(got) == 2 and all(np.all(b == 1) for b in got)
    assert batches.batches == 2


def test_calibration_batches_errors():
    with pytest.raises(CompressError, match="does not fit the network input N x 2x3x3"):
        list(CalibrationBatches([np.zeros((4, 2, 5, 5))], 2, (2, 3, 3)))
    with pytest.raises(CompressError, match="NaN"):
        list(CalibrationBatches([np.full((2, 2, 3, 3), np.nan)], 2, (2, 3, 3)))
    with pytest.raises(CompressError, match="batch size"):
        CalibrationBatches([], 0, (2, 3, 3))


def test_calibrator_core_feeds_batches_and_caches(tmp_path):
    cache = tmp_path / "m.calib"
    cache.write_bytes(b"stale table of another model")
    source = CalibrationBatches([_samples(5)], 2, (2, 3, 3))
    core = CalibratorCore(source, cache, 2)
    assert core.read_cache() is None  # given data: calibrate afresh, never trust an old cache
    assert core.next_batch().shape == (2, 2, 3, 3)
    assert core.next_batch().shape == (2, 2, 3, 3)
    assert core.next_batch() is None and core.next_batch() is None
    core.write_cache(memoryview(b"TRT-calib-table"))
    core.check()  # two batches given: fine
    assert core.given == 2 and core.cache_written and cache.read_bytes() == b"TRT-calib-table"
    again = CalibratorCore(None, cache, 2)  # a later build: the cache alone
    assert again.read_cache() == b"TRT-calib-table" and again.next_batch() is None
    again.check()


def test_calibrator_core_keeps_errors_for_after_the_build(tmp_path):
    def broken():
        yield np.zeros((2, 2, 3, 3))
        raise OSError("disk went away")

    core = CalibratorCore(CalibrationBatches(broken(), 2, (2, 3, 3)), tmp_path / "c", 2)
    assert core.next_batch() is not None
    assert core.next_batch() is None  # TensorRT sees the end of data, not an exception
    with pytest.raises(CompressError, match="disk went away"):
        core.check()
    bad_shape = CalibratorCore(CalibrationBatches([np.zeros((2, 1, 1, 1))], 2, (2, 3, 3)), tmp_path / "c", 2)
    assert bad_shape.next_batch() is None
    with pytest.raises(CompressError, match="does not fit"):
        bad_shape.check()
    too_few = CalibratorCore(CalibrationBatches([_samples(1)], 4, (2, 3, 3)), tmp_path / "c", 4)
    assert too_few.next_batch() is None
    with pytest.raises(CompressError, match="no full batch of 4 \\(1 images\\)"):
        too_few.check()


# --------------------------------------------------------------------------------------------
# statistics from event times
# --------------------------------------------------------------------------------------------


def test_summarize_ms_by_hand():
    # 1..4: p50 = 2.5, p90 at index 2.7 -> 3.7, p99 at index 2.97 -> 3.97
    assert summarize_ms([4, 1, 3, 2]) == pytest.approx({"p50": 2.5, "p90": 3.7, "p99": 3.97, "mean": 2.5})
    assert summarize_ms([0.0, 0.0])["mean"] == 0.0
    with pytest.raises(ValueError):
        summarize_ms([])


def test_assemble_stats_by_hand():
    stats = assemble_stats(
        [0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0], [0.05] * 4, enqueue_ms=[0.02] * 4,
        batch=2, input_shape=(3, 16, 16), warmup=5, device="Orin", versions={"tensorrt": "10.3.0"},
        settings={"engine": "m.engine"},
    )
    assert isinstance(stats, LatencyStats) and stats.runtime == "tensorrt"
    # end-to-end = h2d + compute + d2h = 1.15, 2.25, 3.35, 4.45
    assert stats.p50 == pytest.approx(2.8) and stats.mean == pytest.approx(2.8)
    # p90 at index 2.7: 3.35 + 0.7 * 1.1; p99 at index 2.97: 3.35 + 0.97 * 1.1
    assert stats.p90 == pytest.approx(4.12) and stats.p99 == pytest.approx(4.417)
    assert stats.throughput == pytest.approx(2000 / 2.8)
    assert (stats.runs, stats.warmup, stats.batch, stats.input_shape) == (4, 5, 2, (3, 16, 16))
    s = stats.settings
    assert s["gpu_compute_ms"] == pytest.approx({"p50": 2.5, "p90": 3.7, "p99": 3.97, "mean": 2.5})
    assert s["h2d_ms"]["mean"] == pytest.approx(0.25) and s["d2h_ms"]["p99"] == pytest.approx(0.05)
    assert s["enqueue_ms"]["p50"] == pytest.approx(0.02)
    assert s["engine"] == "m.engine" and "end-to-end" in s["latency"]
    d = stats.to_dict()
    assert json.loads(json.dumps(d)) == d
    with pytest.raises(ValueError):
        assemble_stats([0.1], [1.0, 2.0], [0.1], batch=1, input_shape=(3,), warmup=0, device="x", versions={})


# --------------------------------------------------------------------------------------------
# the runner loop against a fake engine and fake CUDA buffers
# --------------------------------------------------------------------------------------------


class FakeBackend:
    """Host numpy 'device' memory keyed by fake pointers; a clock that copies and kernels advance."""

    name = "fake"

    def __init__(self):
        self.mem: dict[int, np.ndarray] = {}
        self.next_ptr = 0x1000
        self.clock = 0.0
        self.closed = False

    def device_buffer(self, nbytes):
        ptr = self.next_ptr
        self.next_ptr += max(nbytes, 1) + 256
        self.mem[ptr] = np.zeros(max(nbytes, 1), np.uint8)
        return DeviceBuffer(ptr, nbytes, self.mem[ptr])

    def host_buffer(self, shape, dtype):
        return HostBuffer(np.zeros(shape, dtype))

    def stream(self):
        return object()

    def stream_handle(self, stream):
        return 42

    def event(self):
        return {"t": None}

    def record(self, event, stream):
        event["t"] = self.clock

    def synchronize(self, event):
        assert event["t"] is not None

    def elapsed_ms(self, start, end):
        return end["t"] - start["t"]

    def h2d(self, dev, host, stream):
        dev.handle[: host.array.nbytes] = host.array.reshape(-1).view(np.uint8)
        self.clock += 0.25

    def d2h(self, host, dev, stream):
        host.array.reshape(-1).view(np.uint8)[:] = dev.handle[: host.array.nbytes]
        self.clock += 0.125

    def device_name(self):
        return "Fake GPU"

    def versions(self):
        return {"cuda": "12.6"}

    def close(self):
        self.closed = True


PROFILE = ((1, 3, 4, 4), (2, 3, 4, 4), (8, 3, 4, 4))


def fake_model(x: np.ndarray) -> np.ndarray:
    """What the fake engine computes: per-sample sum times 0..9, in float16."""
    return (x.reshape(len(x), -1).sum(1, keepdims=True) * np.arange(10)).astype(np.float16)


class FakeContext:
    def __init__(self, backend):
        self.backend = backend
        self.shapes = {}
        self.addr = {}
        self.ok = True
        self.calls = 0

    def set_input_shape(self, name, shape):
        if name != "input" or not all(a <= s <= b for a, s, b in zip(PROFILE[0], shape, PROFILE[2])):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return (self.shapes["input"][0], 10) if name == "logits" else self.shapes[name]

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr
        return True

    def execute_async_v3(self, handle):
        assert handle == 42
        self.calls += 1
        shape = self.shapes["input"]
        n = int(np.prod(shape)) * 4
        x = self.backend.mem[self.addr["input"]][:n].view(np.float32).reshape(shape)
        y = fake_model(x)
        self.backend.mem[self.addr["logits"]][: y.nbytes] = y.reshape(-1).view(np.uint8)
        self.backend.clock += 1.0
        return self.ok


class FakeEngine:
    num_io_tensors = 2

    def __init__(self, backend):
        self.backend = backend
        self.contexts = []

    def get_tensor_name(self, i):
        return ["input", "logits"][i]

    def get_tensor_mode(self, name):
        return _Enum("INPUT" if name == "input" else "OUTPUT")

    def get_tensor_shape(self, name):
        return (-1, 3, 4, 4) if name == "input" else (-1, 10)

    def get_tensor_dtype(self, name):
        return _StrEnum("DataType.FLOAT") if name == "input" else _Enum("HALF")

    def get_tensor_profile_shape(self, name, index):
        assert index == 0
        return list(PROFILE)

    def create_execution_context(self):
        self.contexts.append(FakeContext(self.backend))
        return self.contexts[-1]


def test_describe_io():
    specs = describe_io(FakeEngine(FakeBackend()))
    assert [(s.name, s.is_input, s.shape, s.dtype) for s in specs] == [
        ("input", True, (-1, 3, 4, 4), np.float32),
        ("logits", False, (-1, 10), np.float16),
    ]
    assert specs[0].profile == PROFILE and specs[1].profile is None


def test_bind_and_time_engine():
    backend = FakeBackend()
    engine = FakeEngine(backend)
    context = engine.create_execution_context()
    inputs, outputs = bind(engine, context, backend, {"input": (3, 3, 4, 4)})
    assert [b.shape for b in inputs] == [(3, 3, 4, 4)] and [b.shape for b in outputs] == [(3, 10)]
    assert outputs[0].host.array.dtype == np.float16
    x = np.random.default_rng(1).standard_normal((3, 3, 4, 4)).astype(np.float32)
    inputs[0].host.array[...] = x
    times = time_engine(context, backend, inputs, outputs, warmup=2, runs=5)
    assert context.calls == 7
    assert times["h2d"] == pytest.approx([0.25] * 5)
    assert times["compute"] == pytest.approx([1.0] * 5)
    assert times["d2h"] == pytest.approx([0.125] * 5)
    assert len(times["enqueue"]) == 5 and min(times["enqueue"]) >= 0
    assert np.array_equal(outputs[0].host.array, fake_model(x))
    with pytest.raises(CompressError, match="rejects shape 9x3x4x4"):
        bind(engine, context, backend, {"input": (9, 3, 4, 4)})
    context.ok = False
    with pytest.raises(CompressError, match="execute_async_v3 returned False"):
        time_engine(context, backend, inputs, outputs, warmup=0, runs=1)


@pytest.fixture
def fake_trt(monkeypatch):
    """A fake ``tensorrt`` module whose Runtime loads files holding b'fake-engine'."""
    backend = FakeBackend()

    class ILogger:
        def __init__(self):
            pass

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            if data != b"fake-engine":
                self.logger.log(_Enum("ERROR"), "Serialization assertion failed: magic tag\nmore")
                return None
            return FakeEngine(backend)

    trt = types.SimpleNamespace(__version__="10.3.0", ILogger=ILogger, Runtime=Runtime)
    patch_trt(monkeypatch, "_LOGGERS", {})
    patch_trt(monkeypatch, "_import_trt", lambda missing=None: trt)
    patch_trt(monkeypatch, "make_backend", lambda backend_arg="auto", device=0: backend)
    return backend


def test_trt_runner_measure_with_fakes(fake_trt, tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"fake-engine")
    with TrtRunner(engine) as runner:
        stats = runner.measure(batch=2, warmup=3, runs=6, default_shape=(3, 224, 224))
    assert fake_trt.closed
    assert stats.runtime == "tensorrt" and stats.device == "Fake GPU"
    assert (stats.batch, stats.warmup, stats.runs, stats.input_shape) == (2, 3, 6, (3, 4, 4))
    assert stats.p50 == pytest.approx(1.375) and stats.std == pytest.approx(0.0, abs=1e-9)
    assert stats.throughput == pytest.approx(2000 / 1.375)
    assert stats.versions == {"tensorrt": "10.3.0", "cuda": "12.6"}
    s = stats.settings
    assert s["gpu_compute_ms"]["p50"] == pytest.approx(1.0) and s["h2d_ms"]["p50"] == pytest.approx(0.25)
    assert s["engine"] == "m.engine" and s["buffers"] == "fake"
    assert s["io"] == [
        {"name": "input", "mode": "input", "shape": [2, 3, 4, 4], "dtype": "float32"},
        {"name": "logits", "mode": "output", "shape": [2, 10], "dtype": "float16"},
    ]
    d = stats.to_dict()
    assert json.loads(json.dumps(d)) == d


def test_trt_runner_infer_and_errors_with_fakes(fake_trt, tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"fake-engine")
    runner = TrtRunner()
    x = np.random.default_rng(2).standard_normal((5, 3, 4, 4)).astype(np.float32)
    out = runner.infer(x, engine)
    assert list(out) == ["logits"] and np.array_equal(out["logits"], fake_model(x))
    with pytest.raises(CompressError, match="outside the engine's profile"):
        runner.measure(engine, batch=16, warmup=0, runs=1)
    with pytest.raises(CompressError, match="takes 3x4x4, not 3x8x8"):
        runner.measure(engine, (3, 8, 8), warmup=0, runs=1)
    with pytest.raises(CompressError, match="runs >= 1"):
        runner.measure(engine, runs=0)
    with pytest.raises(CompressError, match="does not exist"):
        runner.measure(tmp_path / "missing.engine")
    with pytest.raises(CompressError, match="no engine given"):
        runner.measure()
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"junk")
    with pytest.raises(CompressError) as info:
        runner.measure(bad, warmup=0, runs=1)
    msg = str(info.value)
    assert "cannot load bad.engine: Serialization assertion failed: magic tag;" in msg and "\n" not in msg
    runner.close()


def test_trt_runner_without_tensorrt(tmp_path):
    if TRT_OK or "tensorrt" in sys.modules:
        pytest.skip("TensorRT is importable here; this checks the message without it")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"whatever")
    with pytest.raises(CompressError, match="TensorRT is not installed: timing an engine needs tensorrt"):
        TrtRunner(engine).measure(warmup=0, runs=1)


# --------------------------------------------------------------------------------------------
# build_engine's control flow against a fake TensorRT builder
# --------------------------------------------------------------------------------------------


class FakeBuildTrt:
    """Just enough of the TensorRT 10 builder API to drive build_engine without a GPU.

    The parser accepts any file not starting with b"junk"; the network has one input of shape
    ``input_dims``. build_serialized_network runs the INT8 calibrator the way TensorRT does
    (read the cache; else pull batches until None, then write the cache) and returns the engine
    bytes, or None after logging an error when ``fail`` is set.
    """

    __version__ = "10.3.0"

    def __init__(self, input_dims=(-1, 3, 16, 16), fail=False):
        fake = self
        self.input_dims = input_dims
        self.fail = fail
        self.built = []
        self.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8", TF32="TF32")
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")

        class ILogger:
            def __init__(self):
                pass

        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

        class Tensor:
            def __init__(self, name, shape):
                self.name, self.shape, self.dtype = name, shape, _Enum("FLOAT")

        class Network:
            def __init__(self):
                self.inputs = []

            @property
            def num_inputs(self):
                return len(self.inputs)

            def get_input(self, i):
                return self.inputs[i]

        class ParserError:
            def __init__(self, node, name, desc):
                self._node, self._name, self._desc = node, name, desc

            def desc(self):
                return self._desc

            def node(self):
                return self._node

            def node_name(self):
                return self._name

            def node_operator(self):
                return "Foo"

        class OnnxParser:
            def __init__(self, network, logger):
                self.network, self.errors = network, []

            def parse_from_file(self, path):
                if Path(path).read_bytes().startswith(b"junk"):
                    self.errors = [ParserError(3, "bad", "unsupported\ntrace"), ParserError(4, "b", "x")]
                    return False
                self.network.inputs.append(Tensor("input", fake.input_dims))
                return True

            @property
            def num_errors(self):
                return len(self.errors)

            def get_error(self, i):
                return self.errors[i]

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

        class TimingCache:
            def __init__(self, data):
                self.data = bytes(data)

            def serialize(self):
                return memoryview(self.data + b"+tactics")

        class Config:
            def __init__(self):
                self.flags = {"TF32"}  # TensorRT's default
                self.pools = {}
                self.profiles = []
                self.cache = None
                self.int8_calibrator = None
                self.calibration_profile = None

            def set_memory_pool_limit(self, pool, size):
                self.pools[pool] = size

            def set_flag(self, flag):
                self.flags.add(flag)

            def clear_flag(self, flag):
                self.flags.discard(flag)

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)

            def create_timing_cache(self, data):
                return TimingCache(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                if cache.data == b"from another GPU":
                    return False
                self.cache = cache
                return True

            def get_timing_cache(self):
                return self.cache

            def set_calibration_profile(self, profile):
                self.calibration_profile = profile

        class Builder:
            platform_has_fast_fp16 = True
            platform_has_fast_int8 = True

            def __init__(self, logger):
                self.logger = logger

            def create_network(self, flags):
                assert flags == 0  # TensorRT 10: explicit batch only
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                calib = config.int8_calibrator
                if calib is not None:
                    calib.batches = []
                    if calib.read_calibration_cache() is None:
                        while (ptrs := calib.get_batch(["input"])) is not None:
                            calib.batches.append(ptrs)
                        calib.write_calibration_cache(memoryview(b"calibration table"))
                fake.built.append((network, config))
                if fake.fail:
                    self.logger.log(_Enum("ERROR"), "Internal error: out of workspace\ndetails")
                    return None
                return bytearray(b"ENGINE:" + ",".join(sorted(config.flags)).encode())

        self.ILogger = ILogger
        self.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
        self.Builder = Builder
        self.OnnxParser = OnnxParser


class CopyBackend(FakeBackend):
    def __init__(self):
        super().__init__()
        self.copied = []

    def copy_to_device(self, dev, array):
        assert array.nbytes <= dev.nbytes
        self.copied.append(array.copy())


@pytest.fixture
def fake_builder(monkeypatch, tmp_path):
    """Patch in a FakeBuildTrt and a copying fake backend; returns (trt, backend, onnx path)."""
    trt = FakeBuildTrt()
    backend = CopyBackend()
    patch_trt(monkeypatch, "_LOGGERS", {})
    patch_trt(monkeypatch, "_import_trt", lambda missing=None: trt)
    patch_trt(monkeypatch, "make_backend", lambda backend_arg="auto", device=0: backend)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"an onnx model")
    return trt, backend, onnx


def test_fake_build_fp16_profile_and_timing_cache(fake_builder, tmp_path):
    trt, _, onnx = fake_builder
    cache = tmp_path / "caches" / "trt.cache"
    info = build_engine(onnx, tmp_path / "out" / "m.engine", "fp16", (1, 2, 4), workspace_mb=256, timing_cache=cache)
    network, config = trt.built[-1]
    assert config.flags == {"FP16", "TF32"} and config.pools == {"WORKSPACE": 256 * 2**20}
    [profile] = config.profiles
    assert profile.shapes == {"input": ((1, 3, 16, 16), (2, 3, 16, 16), (4, 3, 16, 16))}
    assert (tmp_path / "out" / "m.engine").read_bytes() == b"ENGINE:FP16,TF32"
    assert cache.read_bytes() == b"+tactics"  # a fresh cache, written after the build
    assert info["inputs"]["input"]["profile"] == [[1, 3, 16, 16], [2, 3, 16, 16], [4, 3, 16, 16]]
    assert info["bytes"] == len(b"ENGINE:FP16,TF32") and info["calibration"] is None
    assert info["tensorrt"] == "10.3.0" and json.loads(json.dumps(info)) == info
    build_engine(onnx, tmp_path / "out" / "m2.engine", "fp16", timing_cache=cache)
    assert trt.built[-1][1].cache.data == b"+tactics" and cache.read_bytes() == b"+tactics+tactics"
    cache.write_bytes(b"from another GPU")  # a mismatched cache: start afresh
    build_engine(onnx, tmp_path / "out" / "m3.engine", "fp16", timing_cache=cache)
    assert cache.read_bytes() == b"+tactics"


def test_fake_build_fp32_turns_tf32_off_and_static_models_get_no_profile(fake_builder, tmp_path):
    trt, _, onnx = fake_builder
    trt.input_dims = (1, 3, 16, 16)
    info = build_engine(onnx, tmp_path / "m.engine", "fp32")
    _, config = trt.built[-1]
    assert config.flags == set() and config.profiles == []
    assert info["inputs"]["input"]["profile"] == [[1, 3, 16, 16]] * 3
    trt.input_dims = (-1, 3, -1, -1)
    with pytest.raises(CompressError, match="dynamic dimensions"):
        build_engine(onnx, tmp_path / "m.engine", "fp32")
    build_engine(onnx, tmp_path / "m.engine", "fp32", batch=8, input_shape=(3, 64, 48))
    assert trt.built[-1][1].profiles[0].shapes["input"] == ((8, 3, 64, 48),) * 3


def test_fake_build_int8_calibrates_then_reuses_the_cache(fake_builder, tmp_path):
    trt, backend, onnx = fake_builder
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((5, 3, 16, 16)) for _ in range(4)]  # 20 images -> 2 batches of 8
    engine = tmp_path / "m.engine"
    info = build_engine(onnx, engine, "int8", (1, 1, 4), calibration_batches=data)
    _, config = trt.built[-1]
    assert config.flags == {"FP16", "INT8", "TF32"}
    assert config.calibration_profile.shapes == {"input": ((8, 3, 16, 16),) * 3}
    assert config.int8_calibrator.get_batch_size() == 8
    assert len(backend.copied) == 2 and backend.copied[0].shape == (8, 3, 16, 16)
    assert np.allclose(backend.copied[1][:2], data[1][3:5])  # samples packed in order
    assert backend.closed and config.int8_calibrator.buffer is None  # freed before the context
    assert (tmp_path / "m.calib").read_bytes() == b"calibration table"
    assert info["calibration"] == {"batches": 2, "from_cache": False, "cache_written": True}

    backend.copied.clear()
    info = build_engine(onnx, tmp_path / "again.engine", "int8", calibration_cache=tmp_path / "m.calib")
    assert info["calibration"] == {"batches": 0, "from_cache": True, "cache_written": False}
    assert backend.copied == []


def test_fake_build_int8_bad_calibration_data_is_reported(fake_builder, tmp_path):
    _, _, onnx = fake_builder
    with pytest.raises(CompressError, match="resize calibration images to 16x16"):
        build_engine(onnx, tmp_path / "m.engine", "int8", calibration_batches=[np.zeros((8, 3, 32, 32))])
    with pytest.raises(CompressError, match="no full batch of 8 \\(3 images\\)"):
        build_engine(onnx, tmp_path / "m.engine", "int8", calibration_batches=[np.zeros((3, 3, 16, 16))])
    assert not (tmp_path / "m.engine").exists()


def test_fake_build_parse_and_build_failures(fake_builder, tmp_path):
    trt, _, _ = fake_builder
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"junk")
    with pytest.raises(CompressError) as info:
        build_engine(junk, tmp_path / "j.engine")
    assert str(info.value).startswith(
        "TensorRT cannot parse junk.onnx: node 3 'bad' (Foo): unsupported (and 1 more);"
    )
    trt.fail = True
    good = tmp_path / "good.onnx"
    good.write_bytes(b"fine")
    with pytest.raises(CompressError) as info:
        build_engine(good, tmp_path / "g.engine")
    msg = str(info.value)
    assert "could not build an engine from good.onnx: Internal error: out of workspace;" in msg
    assert "\n" not in msg and not (tmp_path / "g.engine").exists()


# --------------------------------------------------------------------------------------------
# real TensorRT (skipped without it)
# --------------------------------------------------------------------------------------------


@needs_trt
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-3), ("fp16", 5e-2)])
def test_build_engine_matches_onnxruntime(onnx_file, tmp_path, precision, tol):
    engine = tmp_path / f"tiny-{precision}.engine"
    cache = tmp_path / "trt.cache"
    info = build_engine(onnx_file, engine, precision=precision, batch=(1, 2, 4), workspace_mb=256,
                        timing_cache=cache)
    assert engine.is_file() and engine.stat().st_size == info["bytes"] > 0
    assert cache.is_file() and cache.stat().st_size > 0
    assert info["inputs"]["input"]["profile"] == [[1, 3, 16, 16], [2, 3, 16, 16], [4, 3, 16, 16]]
    parity = compare_with_onnxruntime(engine, onnx_file, batch=3)
    assert parity["max_abs_diff"] < tol, parity
    again = build_engine(onnx_file, tmp_path / "again.engine", precision=precision, batch=(1, 2, 4),
                         workspace_mb=256, timing_cache=cache)  # reuses the timing cache
    assert again["bytes"] > 0


@needs_trt
def test_trt_runner_times_an_engine(onnx_file, tmp_path):
    engine = tmp_path / "tiny.engine"
    build_engine(onnx_file, engine, precision="fp16", batch=(1, 1, 8), workspace_mb=256)
    with TrtRunner(engine) as runner:
        stats = runner.measure(batch=4, warmup=20, runs=100)
    assert stats.runtime == "tensorrt" and stats.runs == 100 and stats.batch == 4
    assert 0 < stats.p50 <= stats.p90 <= stats.p99
    compute = stats.settings["gpu_compute_ms"]
    assert 0 < compute["p50"] <= stats.p50  # compute is part of the end-to-end latency
    assert "tensorrt" in stats.versions and stats.versions.get("cuda")
    assert stats.input_shape == SHAPE


@needs_trt
def test_int8_engine_with_calibration_then_from_cache(onnx_file, tmp_path):
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((4, *SHAPE)).astype(np.float32) for _ in range(8)]
    engine = tmp_path / "tiny-int8.engine"
    info = build_engine(onnx_file, engine, precision="int8", batch=(1, 1, 4), workspace_mb=256,
                        calibration_batches=data, calibration_batch_size=8)
    assert info["calibration"]["batches"] == 4 and (tmp_path / "tiny-int8.calib").is_file()
    info2 = build_engine(onnx_file, tmp_path / "again.engine", precision="int8", batch=(1, 1, 4),
                         workspace_mb=256, calibration_cache=tmp_path / "tiny-int8.calib")
    assert info2["calibration"]["from_cache"]
    out = TrtRunner(engine).infer(data[0])
    assert np.isfinite(out["logits"]).all() and out["logits"].shape == (4, 10)


@needs_trt
def test_parse_error_is_one_line(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model")
    with pytest.raises(CompressError) as info:
        build_engine(junk, tmp_path / "junk.engine")
    assert "TensorRT cannot parse junk.onnx" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "junk.engine").exists()

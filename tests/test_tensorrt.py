"""TensorRT engine building and timing: the parts that need no TensorRT, and real TensorRT.

Argument checks, optimization-profile shapes, dtype mapping, timing-cache files, statistics from
event times and the engine inspector's layer counts run here. The TensorRT calls themselves are
tested against fakes of each real TensorRT version in tests/test_tensorrt_versions.py. The tests
at the end build and time real engines and are skipped where TensorRT or a GPU is missing.
"""
from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
from _trt_fake import make_trt, patch_trt, tiny_cnn

from compress_base.errors import CompressError
from exporters.onnx_export import export_onnx
from exporters.stats import LatencyStats, summarize_ms
from exporters.tensorrt import (
    NOT_INSTALLED,
    TrtRunner,
    assemble_stats,
    build_engine,
    check_trt_version,
    compare_with_onnxruntime,
    enum_name,
    format_layers,
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
    summarize_layers,
    tensorrt_available,
    validate_build_args,
    write_bytes_atomic,
)
from exporters.tensorrt.layers import format_type

TRT_OK, TRT_REASON = tensorrt_available()
needs_trt = pytest.mark.skipif(not TRT_OK, reason=f"needs TensorRT 10 or newer and a CUDA GPU: {TRT_REASON}")
SHAPE = (3, 16, 16)
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
        ("8.6.1", ("pycuda", "pycuda"), False, ["8.6.1", "too old to build", "10.3 to 11.x"]),
        ("10.3.0", (None, "torch finds no CUDA device"), False, ["10.3.0", "no CUDA device", "pycuda"]),
        ("10.3.0", ("pycuda", "pycuda"), True, ["10.3.0", "pycuda"]),
        ("11.4.0.106", ("torch", "torch 2.5 with CUDA 12.6"), True, ["11.4.0.106"]),
    ],
)
def test_tensorrt_available_with_a_fake_module(monkeypatch, version, probe, ok, words):
    trt = make_trt("10.3.0" if version.startswith("8") else version)
    trt.__version__ = version
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
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
    # building: strongly typed networks, TensorRT 10 and later; running: the named-tensor API, 8.5 and later
    assert check_trt_version("10.3.0")[0] and check_trt_version("11.4.0.106")[0]
    assert not check_trt_version("8.6.1")[0] and not check_trt_version("9.3.0")[0]
    assert check_trt_version("8.5.2", "run")[0] and check_trt_version("8.6.1", "run")[0]
    assert not check_trt_version("8.4.3", "run")[0] and not check_trt_version("7.1", "run")[0]
    assert "trtexec" in check_trt_version("8.2.1.8", "run")[1]


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
    assert args.precision == "fp16" and validate_build_args(onnx_file, tmp_path / "m.engine").precision is None


@pytest.mark.parametrize(
    "change, match",
    [
        ({"precision": "fp8"}, "precision 'fp8'"),
        ({"workspace_mb": 0}, "workspace"),
        ({"workspace_mb": 1.5}, "workspace"),
        ({"batch": (4, 2, 1)}, "MIN,OPT,MAX"),
        ({"input_shape": (3, -1, 4)}, "positive integers"),
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


def test_build_engine_checks_arguments_before_tensorrt(onnx_file, tmp_path):
    with pytest.raises(CompressError, match="does not exist"):
        build_engine(tmp_path / "nope.onnx", tmp_path / "m.engine")
    with pytest.raises(CompressError, match="precision 'int4'"):
        build_engine(onnx_file, tmp_path / "m.engine", precision="int4")


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
    assert info["precision"] == precision and info["layers"]["precisions"].get(precision, 0) >= 1, info["layers"]
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
def test_int8_engine_from_calibration_images(onnx_file, tmp_path):
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((4, *SHAPE)).astype(np.float32) for _ in range(8)]
    engine = tmp_path / "tiny.engine"
    info = build_engine(onnx_file, engine, precision="int8", batch=(1, 1, 4), workspace_mb=256, calibration=data)
    assert info["precision"] == "int8" and info["prepared"]["calibration_images"] == 32
    assert info["layers"]["precisions"].get("int8", 0) >= 1, info["layers"]
    again = build_engine(tmp_path / "tiny.trt-int8.onnx", tmp_path / "again.engine", batch=(1, 1, 4))  # as it is
    assert again["precision"] == "int8" and again["prepared"] is None
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


# --------------------------------------------------------------------------------------------
# the engine inspector's layers per precision
# --------------------------------------------------------------------------------------------

# The shape of IEngineInspector's JSON at ProfilingVerbosity.DETAILED (texts as TensorRT prints them)
INSPECTOR_JSON = json.dumps({"Layers": [
    {"Name": "Reformatting CopyNode for Input Tensor 0 to conv1", "LayerType": "Reformat",
     "Inputs": [{"Name": "input", "Format/Datatype": "Row major linear FP32"}],
     "Outputs": [{"Name": "r", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}]},
    {"Name": "conv1 + relu1", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "r", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}],
     "Outputs": [{"Name": "a", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}]},
    {"Name": "conv2", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "a", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
     "Outputs": [{"Name": "b", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
    {"Name": "fc", "LayerType": "CaskGemm", "Inputs": [{"Name": "b", "Format/Datatype": "Float"}], "Outputs": []},
    {"Name": "shuffle", "LayerType": "NoOp", "Inputs": [{"Name": "x", "Format/Datatype": "N/A due to dynamic shapes"}],
     "Outputs": [{"Name": "y", "Format/Datatype": "N/A due to dynamic shapes"}]},
    {"Name": "uint", "LayerType": "Cast", "Inputs": [{"Name": "u", "Format/Datatype": "Row major linear UInt8"}]},
], "Bindings": ["input", "logits"]})


def test_summarize_layers_by_hand():
    assert format_type("Row major linear FP32") == "fp32" and format_type("Float") == "fp32"
    assert format_type("Row major linear Half") == "fp16" and format_type("Row major linear UInt8") == "uint8"
    assert format_type("N/A due to dynamic shapes") == "unknown"
    summary = summarize_layers(INSPECTOR_JSON)
    # the Reformat reads FP32: fp32; conv1 int8; conv2 fp16; fc fp32; shuffle unknown; the cast uint8
    assert summary == {"layers": 6, "precisions": {"int8": 1, "fp16": 1, "fp32": 2, "uint8": 1, "unknown": 1},
                       "reformats": 1}
    assert format_layers({**summary, "verbosity": "detailed"}) == (
        "6 layers: 1 int8, 1 fp16, 2 fp32, 1 uint8, 1 unknown (1 reformats)")
    names_only = summarize_layers(json.dumps({"Layers": ["conv1", "fc"], "Bindings": []}))
    assert names_only == {"layers": 2, "precisions": {"unknown": 2}, "reformats": 0}
    assert "without detailed profiling verbosity" in format_layers({**names_only, "verbosity": "layer_names_only"})
    with pytest.raises(CompressError, match="gave no layer list"):
        summarize_layers("conv1\nfc")  # the ONELINE format

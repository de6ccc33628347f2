"""The TensorRT code against fakes of four real TensorRT versions: 10.3.0 (JetPack 6), 10.13, 10.16
and 11.4 (what `pip install tensorrt` gives today).

Each fake (tests/_trt_fake.py) has exactly the names of that version's real bindings
(tests/data/tensorrt-api/*.json) and raises AttributeError for any other, so a test here fails
if the code touches a name that version lacks. The builder, the runner (deserialize, bind, execute
up to the GPU call, the engine inspector), `compress engine` and `compress bench` run against each.
What this cannot show: that real TensorRT builds and runs these engines; no test here had a GPU.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
from _trt_fake import VERSIONS, FakeBackend, load_api, make_trt, patch_trt, tiny_cnn
from click.testing import CliRunner
from PIL import Image

from compress_base.errors import CompressError
from compressor.cli import main
from exporters.bench import bench
from exporters.onnx_eval import add_metadata
from exporters.onnx_export import export_onnx
from exporters.precision import prepare_onnx
from exporters.tensorrt import (
    API,
    TrtRunner,
    build_engine,
    compare_with_onnxruntime,
    missing_api,
    onnx_precision,
)
from exporters.tensorrt.availability import api_names

SHAPE = (3, 16, 16)


def covered(purpose: str) -> set[str]:
    """The names exporters.tensorrt checks up front for ``purpose``, and the classes that own them."""
    names = set(api_names(purpose))
    return names | {"." + n.split(".")[0] for n in names if not n.startswith(".")}


BUILD_NAMES = covered("build")


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    return export_onnx(tiny_cnn(), SHAPE, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def calibration(n=2):
    rng = np.random.default_rng(0)
    return [rng.standard_normal((4, *SHAPE)).astype(np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def int8_file(onnx_file, tmp_path_factory):
    dst = tmp_path_factory.mktemp("int8") / "tiny.int8.onnx"
    prepare_onnx(onnx_file, dst, "int8", "tensorrt", calibration())
    return dst


def install(monkeypatch, version: str, gpu: bool = True):
    """Make the fake of ``version`` the ``tensorrt`` module; CUDA buffers from the fake backend."""
    backend = FakeBackend()
    trt = make_trt(version, gpu=gpu, backend=backend)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    patch_trt(monkeypatch, "_LOGGERS", {})
    patch_trt(monkeypatch, "make_backend", lambda backend_arg="auto", device=0: backend)
    return trt


@pytest.fixture(params=VERSIONS)
def trt(request, monkeypatch):
    return install(monkeypatch, request.param)


# --------------------------------------------------------------------------------------------
# the API names
# --------------------------------------------------------------------------------------------


def test_every_name_the_code_calls_is_in_each_version():
    for version in VERSIONS:
        assert missing_api(make_trt(version), "build") == [], version


def test_the_removed_weak_typing_api_is_absent_in_11_4_only():
    """What TensorRT 11 removed, which the code used to call (issue 13): in 10.3, gone in 11.4."""
    old, new = load_api("10.3.0"), load_api("11.4.0.106")
    for enum, member in (("BuilderFlag", "FP16"), ("BuilderFlag", "INT8")):
        assert member in old["enums"][enum] and member not in new["enums"][enum]
    for name in ("int8_calibrator", "set_calibration_profile"):
        assert name in old["classes"]["IBuilderConfig"] and name not in new["classes"]["IBuilderConfig"]
    assert "IInt8EntropyCalibrator2" in old["classes"] and "IInt8EntropyCalibrator2" not in new["classes"]
    assert "STRONGLY_TYPED" in old["enums"]["NetworkDefinitionCreationFlag"]
    assert "STRONGLY_TYPED" in new["enums"]["NetworkDefinitionCreationFlag"]
    fake = make_trt("11.4.0.106")  # the fake refuses what the bindings lack
    assert not hasattr(fake.BuilderFlag, "FP16") and not hasattr(fake, "IInt8EntropyCalibrator2")
    config = fake._classes["IBuilderConfig"]._make()
    with pytest.raises(AttributeError, match="11.4.0.106: IBuilderConfig has no attribute 'int8_calibrator'"):
        config.int8_calibrator = None
    assert make_trt("10.3.0").BuilderFlag.FP16.name == "FP16"


def test_api_table_names_exist_in_the_bindings():
    """Every "Owner.name" of exporters.tensorrt's API table is an attribute of the real class (JSON)."""
    for version in VERSIONS:
        api = load_api(version)
        for name in API["run"] + API["build"]:
            owner, attr = name.split(".")
            members = api["classes"]["<module>"] + list(api["classes"]) if not owner else (
                api["enums"].get(owner) or api["classes"][owner])
            assert attr in members, (version, name)


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------


def test_fp32_onnx_builds_as_is_strongly_typed(trt, onnx_file, tmp_path):
    cache = tmp_path / "caches" / "trt.cache"
    engine = tmp_path / "out" / "m.engine"
    info = build_engine(onnx_file, engine, None, (1, 2, 4), workspace_mb=256, timing_cache=cache)
    network, config = trt._builds[-1]
    strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert network._flags == strongly
    assert config._flags == set()  # fp32: TF32 off, and no weak-typing flag
    assert config._pools == {"WORKSPACE": 256 * 2**20} and config._verbosity.name == "DETAILED"
    assert config._profiles[0]._shapes == {"input": [[1, 3, 16, 16], [2, 3, 16, 16], [4, 3, 16, 16]]}
    assert info["precision"] == "fp32" and info["prepared"] is None and info["onnx"] == str(onnx_file)
    assert info["layers"] == {"layers": 2, "precisions": {"fp32": 2}, "reformats": 0, "verbosity": "detailed"}
    assert cache.read_bytes() == b"+tactics"  # a fresh cache, written after the build
    assert info["tensorrt"] == trt.__version__ and info["bytes"] == engine.stat().st_size
    assert json.loads(json.dumps(info)) == info
    build_engine(onnx_file, tmp_path / "again.engine", timing_cache=cache)
    assert trt._builds[-1][1]._cache._data == b"+tactics" and cache.read_bytes() == b"+tactics+tactics"
    cache.write_bytes(b"from another GPU")  # a mismatched cache: start afresh
    build_engine(onnx_file, tmp_path / "third.engine", timing_cache=cache)
    assert cache.read_bytes() == b"+tactics"
    assert trt._used <= BUILD_NAMES, trt._used - BUILD_NAMES  # the up-front check covers every name used


def test_fp16_prepares_the_onnx_first(trt, onnx_file, tmp_path):
    engine = tmp_path / "m.engine"
    info = build_engine(onnx_file, engine, "fp16", (1, 1, 8))
    prepared = tmp_path / "m.trt-fp16.onnx"
    assert info["precision"] == "fp16" and info["onnx"] == str(prepared)
    assert info["prepared"]["from"] == str(onnx_file) and "fp16" in info["prepared"]["recipe"]
    assert onnx_precision(prepared) == "fp16"
    network, config = trt._builds[-1]
    assert network._onnx == prepared.read_bytes()  # the engine is built from the prepared file
    assert config._flags == {"TF32"}  # no BuilderFlag.FP16: the types come from the ONNX
    assert info["layers"]["precisions"] == {"fp16": 2}
    assert trt._used <= BUILD_NAMES


def test_int8_from_fp32_calibrates_then_builds_as_is(trt, onnx_file, int8_file, tmp_path):
    info = build_engine(onnx_file, tmp_path / "m.engine", "int8", calibration=calibration(3))
    prepared = tmp_path / "m.trt-int8.onnx"
    assert info["precision"] == "int8" and info["prepared"]["calibration_images"] == 12
    assert info["prepared"]["quantized_nodes"] == 2 and onnx_precision(prepared) == "int8"
    assert info["layers"]["precisions"] == {"int8": 2}
    assert trt._builds[-1][1]._flags == {"TF32"}  # no BuilderFlag.INT8, no calibrator
    # an ONNX that holds Q/DQ is built as it is, at no --precision or its own
    for precision in (None, "int8"):
        again = build_engine(int8_file, tmp_path / "q.engine", precision)
        assert again["precision"] == "int8" and again["prepared"] is None and again["onnx"] == str(int8_file)
    assert not (tmp_path / "q.trt-int8.onnx").exists()


def test_precision_errors(trt, onnx_file, int8_file, tmp_path):
    with pytest.raises(CompressError, match="needs calibration images: pass --calib-data DIR"):
        build_engine(onnx_file, tmp_path / "m.engine", "int8")
    with pytest.raises(CompressError) as info:
        build_engine(int8_file, tmp_path / "m.engine", "fp16")
    msg = str(info.value)
    assert "already holds int8 Q/DQ, so its engine is int8, not fp16" in msg and "\n" not in msg
    ort_int8 = tmp_path / "ort.onnx"
    prepare_onnx(onnx_file, ort_int8, "int8", "onnxruntime", calibration(1))
    with pytest.raises(CompressError, match="asymmetric or uint8 Q/DQ .* which TensorRT cannot run"):
        build_engine(ort_int8, tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def test_a_strongly_typed_network_refuses_weak_typing_flags(monkeypatch, onnx_file, tmp_path):
    """The fake applies TensorRT's rule, so an FP16 flag on the network would fail the build."""
    trt = install(monkeypatch, "10.3.0")
    original = trt._classes["IBuilderConfig"].clear_flag

    def set_fp16_too(self, flag):  # what the old builder did for fp16, on top of the new one
        original(self, flag)
        self.set_flag(trt.BuilderFlag.FP16)

    monkeypatch.setattr(trt._classes["IBuilderConfig"], "clear_flag", set_fp16_too)
    with pytest.raises(CompressError, match="kSTRONGLY_TYPED network with \\['FP16'\\] builder flags"):
        build_engine(onnx_file, tmp_path / "m.engine", "fp32")


def test_parse_and_build_failures_are_one_line(trt, tmp_path, onnx_file):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(onnx.load(str(onnx_file)).SerializeToString()[:40])
    with pytest.raises(CompressError):  # onnx itself cannot read it before TensorRT is asked
        build_engine(junk, tmp_path / "j.engine")
    trt._fail_build = True
    with pytest.raises(CompressError) as info:
        build_engine(onnx_file, tmp_path / "g.engine")
    msg = str(info.value)
    assert "could not build an engine from tiny.onnx: Internal error: out of workspace;" in msg
    assert "\n" not in msg and not (tmp_path / "g.engine").exists()


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------


def test_engine_runs_like_onnxruntime_and_reports_its_layers(trt, onnx_file, tmp_path):
    engine = tmp_path / "m.engine"
    build_engine(onnx_file, engine, None, (1, 2, 4))
    trt._used.clear()
    parity = compare_with_onnxruntime(engine, onnx_file, batch=3)
    assert parity["max_abs_diff"] == 0.0 and parity["output"] == "logits"  # the fake runs the same ONNX
    with TrtRunner(engine) as runner:
        stats = runner.measure(batch=2, warmup=3, runs=6)
        layers = runner.layers()
    assert trt._backend.closed
    assert stats.runtime == "tensorrt" and stats.device == "Fake GPU"
    assert (stats.batch, stats.warmup, stats.runs, stats.input_shape) == (2, 3, 6, SHAPE)
    assert stats.p50 == pytest.approx(1.375)  # h2d 0.25 + compute 1.0 + d2h 0.125 on the fake clock
    assert stats.versions == {"tensorrt": trt.__version__, "cuda": "12.6"}
    assert stats.settings["io"] == [
        {"name": "input", "mode": "input", "shape": [2, 3, 16, 16], "dtype": "float32"},
        {"name": "logits", "mode": "output", "shape": [2, 10], "dtype": "float32"},
    ]
    assert layers == {"layers": 2, "precisions": {"fp32": 2}, "reformats": 0, "verbosity": "detailed"}
    assert trt._used <= covered("run"), trt._used - covered("run")  # running needs no builder


def test_runner_errors(trt, onnx_file, tmp_path):
    engine = tmp_path / "m.engine"
    build_engine(onnx_file, engine, None, (1, 2, 4))
    runner = TrtRunner()
    with pytest.raises(CompressError, match="outside the engine's profile"):
        runner.measure(engine, batch=16, warmup=0, runs=1)
    with pytest.raises(CompressError, match="takes 3x16x16, not 3x8x8"):
        runner.measure(engine, (3, 8, 8), warmup=0, runs=1)
    with pytest.raises(CompressError, match="no engine is open"):
        TrtRunner().layers()
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"junk")
    with pytest.raises(CompressError) as info:
        runner.measure(bad, warmup=0, runs=1)
    msg = str(info.value)
    assert "cannot load bad.engine: IRuntime::deserializeCudaEngine: Error Code 1: Serialization" in msg
    assert "\n" not in msg
    runner.close()


def test_an_engine_of_another_version_is_refused(monkeypatch, onnx_file, tmp_path):
    install(monkeypatch, "10.3.0")
    engine = tmp_path / "m.engine"
    build_engine(onnx_file, engine)
    install(monkeypatch, "11.4.0.106")
    with pytest.raises(CompressError, match="11.4.0.106 cannot load m.engine: .*built by TensorRT 10.3.0.*rebuild"):
        TrtRunner(engine).measure(warmup=0, runs=1)


def test_the_runner_builds_an_onnx_at_its_precision(trt, onnx_file, int8_file):
    with TrtRunner(precision="fp16") as runner:
        runner.measure(onnx_file, batch=1, warmup=0, runs=1)
        assert runner.layers()["precisions"] == {"fp16": 2}
        runner.measure(int8_file, batch=1, warmup=0, runs=1)  # Q/DQ: built as it is
        assert runner.layers()["precisions"] == {"int8": 2}


def test_layers_of_an_engine_built_without_detailed_verbosity(trt, onnx_file, tmp_path, monkeypatch):
    engine = tmp_path / "m.engine"
    cls = trt._classes["IBuilderConfig"]
    monkeypatch.setattr(cls, "profiling_verbosity", property(lambda self: self._verbosity, lambda self, v: None))
    info = build_engine(onnx_file, engine)
    assert info["layers"] == {"layers": 2, "precisions": {"unknown": 2}, "reformats": 0,
                              "verbosity": "layer_names_only"}


# --------------------------------------------------------------------------------------------
# no GPU, missing names, old versions: one line each
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0.106"])
def test_no_gpu_type_error_is_one_line(monkeypatch, onnx_file, tmp_path, version):
    install(monkeypatch, version, gpu=False)
    with pytest.raises(CompressError) as info:
        build_engine(onnx_file, tmp_path / "m.engine", "fp16")
    msg = str(info.value)
    assert msg.startswith(f"TensorRT {version} cannot create its Builder (createInferBuilder: Error Code 6: "
                          "API Usage Error (CUDA initialization failure with error: 35)): no usable NVIDIA GPU")
    assert "\n" not in msg and "pybind11" not in msg
    assert not list(tmp_path.iterdir())  # nothing prepared or written before TensorRT could start
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"whatever")
    with pytest.raises(CompressError, match=f"TensorRT {version} cannot create its Runtime .*no usable NVIDIA GPU"):
        TrtRunner(engine).measure(warmup=0, runs=1)


def test_no_gpu_from_the_cli_is_one_line_and_exit_2(monkeypatch, onnx_file, tmp_path):
    install(monkeypatch, "11.4.0.106", gpu=False)
    result = CliRunner().invoke(main, ["engine", str(onnx_file), "--out", str(tmp_path / "m.engine")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: TensorRT 11.4.0.106 cannot create its Builder")
    assert "Traceback" not in result.output


def test_a_missing_name_is_one_line(monkeypatch, onnx_file, tmp_path):
    trt = install(monkeypatch, "11.4.0.106")
    delattr(trt._enums["NetworkDefinitionCreationFlag"], "STRONGLY_TYPED")
    type.__setattr__(trt._classes["EngineInspector"], "_api", frozenset())
    with pytest.raises(CompressError) as info:
        build_engine(onnx_file, tmp_path / "m.engine")
    assert str(info.value) == (
        "TensorRT 11.4.0.106 lacks EngineInspector.execution_context, EngineInspector.get_engine_information, "
        "NetworkDefinitionCreationFlag.STRONGLY_TYPED, which building an engine needs; install TensorRT 10.3 "
        "to 11.x (pip install 'tensorrt>=10.3,<12'; JetPack 6 has 10.3)"
    )
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"an engine")
    with pytest.raises(CompressError, match="lacks EngineInspector.execution_context, .*which running an engine"):
        TrtRunner(engine).measure()


def test_too_old_for_building_but_not_for_running(monkeypatch, onnx_file, tmp_path):
    trt = install(monkeypatch, "10.3.0")
    engine = tmp_path / "m.engine"
    build_engine(onnx_file, engine)
    trt.__version__ = "8.6.1"  # a JetPack 5 board times engines it built with trtexec
    with pytest.raises(CompressError, match="TensorRT 8.6.1 is too old to build engines"):
        build_engine(onnx_file, tmp_path / "n.engine")
    with pytest.raises(CompressError, match="built by TensorRT 10.3.0"):  # it gets as far as loading
        TrtRunner(engine).measure(warmup=0, runs=1)


# --------------------------------------------------------------------------------------------
# compress engine and compress bench
# --------------------------------------------------------------------------------------------


def image_folder(root, n=10, size=20):  # 5 per class in the validation half: no data warning
    rng = np.random.default_rng(1)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(root / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0.106"])
def test_compress_engine_int8_then_bench(monkeypatch, onnx_file, tmp_path, version):
    install(monkeypatch, version)
    model = tmp_path / "model.onnx"
    model.write_bytes(onnx_file.read_bytes())
    add_metadata(model, {"input_shape": list(SHAPE), "preprocess": {
        "resize": None, "crop": None, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
        "interpolation": "bilinear"}})
    images = image_folder(tmp_path / "images")
    import exporters.precision

    fed = []

    def recording(src, dst, precision, recipe, calibration=None, **kwargs):
        fed.extend(calibration)
        return prepare_onnx(src, dst, precision, recipe, calibration, **kwargs)

    monkeypatch.setattr(exporters.precision, "prepare_onnx", recording)
    result = CliRunner().invoke(main, ["engine", str(model), "--precision", "int8", "--calib-data", str(images),
                                       "--calib-images", "5", "-q"])
    assert result.exit_code == 0, result.output
    engine = tmp_path / "model.engine"
    assert result.output.strip() == (
        f"built {engine} (int8 from model.trt-int8.onnx), 2 layers: 2 int8; time it with "
        f"`compress bench {engine} --target gpu`")
    assert onnx_precision(tmp_path / "model.trt-int8.onnx") == "int8"
    # 5 calibration images at the ONNX's input size, normalised as its metadata records: (x/255 - 0.5) / 0.25,
    # so within [-2, 2] and centred on 0 in every channel (ImageNet's default would centre blue on 0.42)
    x = np.concatenate(fed)
    assert x.shape == (5, *SHAPE) and x.dtype == np.float32
    assert np.abs(x).max() <= 2 + 1e-6 and np.all(np.abs(x.mean(axis=(0, 2, 3))) < 0.15)
    out = bench(engine, "gpu", warmup=1, runs=3)
    assert out["engine_layers"] == {"layers": 2, "precisions": {"int8": 2}, "reformats": 0, "verbosity": "detailed"}
    assert out["runtime"] == "tensorrt" and out["stats"]["runs"] == 3
    result = CliRunner().invoke(main, ["bench", str(engine), "--target", "gpu", "--runs", "2", "--warmup", "0", "-q"])
    assert result.exit_code == 0 and "2 layers: 2 int8" in result.output, result.output
    # without calibration images: one line, exit 2
    result = CliRunner().invoke(main, ["engine", str(model), "--precision", "int8", "--out",
                                       str(tmp_path / "x.engine")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "--calib-data DIR" in result.output


def test_compress_engine_default_precision_and_as_is(monkeypatch, onnx_file, int8_file, tmp_path):
    install(monkeypatch, "11.4.0.106")
    result = CliRunner().invoke(main, ["engine", str(onnx_file), "--out", str(tmp_path / "m.engine"), "-q"])
    assert result.exit_code == 0, result.output
    assert "(fp16 from m.trt-fp16.onnx), 2 layers: 2 fp16;" in result.output  # the gpu profile's fp16
    result = CliRunner().invoke(main, ["engine", str(int8_file), "--out", str(tmp_path / "q.engine"), "-q"])
    assert result.exit_code == 0 and f"built {tmp_path / 'q.engine'} (int8), 2 layers: 2 int8;" in result.output
    result = CliRunner().invoke(main, ["engine", str(int8_file), "--precision", "fp32", "--out",
                                       str(tmp_path / "q.engine")])
    assert result.exit_code == 2 and "already holds int8 Q/DQ" in result.output

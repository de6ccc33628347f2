"""Tests for profiles: listing, loading and validating target profiles (TOML)."""
from __future__ import annotations

from pathlib import Path

import pytest

from compress_base.errors import CompressError
from profiles import Measure, Profile, list_profiles, load_profile, parse_profile

GOOD = """\
name = "edge"
description = "a test board"
device = "cpu"
runtimes = ["onnxruntime-cpu"]
precision = "int8"
batch = 2
input_shape = [3, 96, 128]
channel_multiple = 4

[measure]
warmup = 3
runs = 7
threads = 2

[notes]
board = "test"
"""


def _write(tmp_path: Path, text: str, name: str = "edge.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _minimal() -> dict:
    return {"name": "x", "device": "gpu", "runtimes": ["tensorrt"], "input_shape": [3, 32, 32]}


def test_list_profiles_has_cpu_and_gpu():
    names = list_profiles()
    assert {"cpu", "gpu"} <= set(names)
    assert names == sorted(names)


def test_load_cpu_profile():
    p = load_profile("cpu")
    assert isinstance(p, Profile)
    assert p.name == "cpu"
    assert p.device == "cpu"
    assert p.runtimes[0] == "onnxruntime-cpu" and isinstance(p.runtimes, tuple)
    assert p.precision == "fp32"
    assert p.batch == 1
    assert p.input_shape == (3, 224, 224)
    assert p.channel_multiple == 8
    assert p.measure == Measure(warmup=10, runs=50, threads=1)
    assert p.source.endswith("cpu.toml")
    d = p.to_dict()
    assert d["input_shape"] == [3, 224, 224] and d["measure"]["runs"] == 50


def test_load_gpu_profile():
    p = load_profile("gpu")
    assert p.device == "gpu"
    assert p.precision == "fp16"
    assert "tensorrt" in p.runtimes
    assert p.channel_multiple == 8
    assert p.measure.runs >= p.measure.warmup > 0


def test_user_toml_loads(tmp_path):
    path = _write(tmp_path, GOOD)
    p = load_profile(str(path))
    assert p.name == "edge" and p.description == "a test board"
    assert p.device == "cpu" and p.runtimes == ("onnxruntime-cpu",)
    assert p.precision == "int8" and p.batch == 2
    assert p.input_shape == (3, 96, 128)
    assert p.channel_multiple == 4
    assert p.measure == Measure(3, 7, 2)
    assert p.notes == {"board": "test"}
    assert p.source == str(path)


def test_defaults_for_optional_fields():
    p = parse_profile(_minimal(), "test")
    assert p.precision == "fp32" and p.batch == 1 and p.channel_multiple == 1
    assert p.measure == Measure() and p.notes == {} and p.description == ""


@pytest.mark.parametrize("device, recipe", [("gpu", "tensorrt"), ("cpu", "onnxruntime")])
def test_quantization_defaults_to_the_devices_runtime_and_can_be_set(device, recipe):
    assert parse_profile({**_minimal(), "device": device}, "test").quantization == recipe
    other = "onnxruntime" if recipe == "tensorrt" else "tensorrt"  # e.g. a CPU board behind TensorRT's format
    assert parse_profile({**_minimal(), "device": device, "quantization": other}, "test").quantization == other


def test_malformed_toml(tmp_path):
    path = _write(tmp_path, 'name = "edge"\ndevice = cpu\n[measure\n')
    with pytest.raises(CompressError) as info:
        load_profile(str(path))
    assert "TOML" in str(info.value)


def test_missing_device_names_the_field(tmp_path):
    path = _write(tmp_path, GOOD.replace('device = "cpu"\n', ""))
    with pytest.raises(CompressError) as info:
        load_profile(str(path))
    assert "'device'" in str(info.value) and "missing" in str(info.value)


@pytest.mark.parametrize("bad", ['"8"', "8.0", "true"])
def test_wrong_type_for_channel_multiple_names_the_field(tmp_path, bad):
    path = _write(tmp_path, GOOD.replace("channel_multiple = 4", f"channel_multiple = {bad}"))
    with pytest.raises(CompressError) as info:
        load_profile(str(path))
    assert "channel_multiple" in str(info.value)


@pytest.mark.parametrize(
    "key, value, field",
    [
        ("device", "tpu", "device"),
        ("precision", "fp8", "precision"),
        ("runtimes", [], "runtimes"),
        ("runtimes", "tensorrt", "runtimes"),
        ("input_shape", [3, 224], "input_shape"),
        ("input_shape", [3, 0, 224], "input_shape"),
        ("batch", 0, "batch"),
        ("channel_multiple", 0, "channel_multiple"),
        ("measure", {"runs": 0}, "measure.runs"),
        ("measure", {"warmup": -1}, "measure.warmup"),
        ("measure", {"repeat": 3}, "measure.repeat"),
        ("name", 3, "name"),
        ("quantization", "qnnpack", "quantization"),
        ("quantization", 8, "quantization"),
    ],
)
def test_invalid_values_name_the_field(key, value, field):
    data = _minimal()
    data[key] = value
    with pytest.raises(CompressError) as info:
        parse_profile(data, "test.toml")
    msg = str(info.value)
    assert field in msg and "test.toml" in msg and "\n" not in msg


def test_unknown_target_lists_available_profiles():
    with pytest.raises(CompressError) as info:
        load_profile("no-such-target")
    msg = str(info.value)
    assert "no-such-target" in msg
    for name in list_profiles():
        assert name in msg


def test_missing_toml_path(tmp_path):
    with pytest.raises(CompressError) as info:
        load_profile(str(tmp_path / "absent.toml"))
    assert "does not exist" in str(info.value)

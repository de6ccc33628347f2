"""Every shipped profile TOML loads through profiles.load_profile and holds sensible values."""
from __future__ import annotations

import json

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, packaged as tomli (a dependency there)
    import tomli as tomllib

from exporters.runners import ORT_PROVIDERS, TORCH_DEVICES
from profiles import PROFILE_DIR, list_profiles, load_profile

KNOWN_RUNTIMES = {"tensorrt", *ORT_PROVIDERS, *TORCH_DEVICES}
JETSONS = ["jetson-orin-nano", "jetson-agx-orin", "jetson-nano"]
BOARDS = [*JETSONS, "raspberry-pi-4"]


def test_board_profiles_are_shipped():
    assert set(BOARDS) <= set(list_profiles())


@pytest.mark.parametrize("name", list_profiles())
def test_every_profile_loads_with_sensible_values(name):
    p = load_profile(name)
    assert p.name == name  # the file name is the --target name
    assert p.description and p.device in ("cpu", "gpu")
    assert p.runtimes and set(p.runtimes) <= KNOWN_RUNTIMES, p.runtimes
    assert len(set(p.runtimes)) == len(p.runtimes)
    assert p.precision in ("fp32", "fp16", "int8")
    assert 1 <= p.batch <= 64
    c, h, w = p.input_shape
    assert c in (1, 3) and 32 <= h <= 1024 and 32 <= w <= 1024
    assert p.channel_multiple in (1, 2, 4, 8, 16, 32)
    assert 0 <= p.measure.warmup <= p.measure.runs and p.measure.runs >= 30
    assert 0 <= p.measure.threads <= 256
    if p.device == "cpu":
        assert "tensorrt" not in p.runtimes and "torch-cuda" not in p.runtimes
        assert p.precision == "fp32"
        assert p.quantization == "onnxruntime"  # u8 activations: what onnxruntime's CPU kernels run fast
    else:  # a GPU target is never measured on the host CPU by falling back to a CPU runtime
        assert not [r for r in p.runtimes if r.endswith("-cpu")], p.runtimes
        assert p.quantization == "tensorrt"  # symmetric s8 Q/DQ: TensorRT's explicit quantization
    assert all(isinstance(v, str) and v.strip() for v in p.notes.values())
    d = p.to_dict()
    assert json.loads(json.dumps(d)) == d


@pytest.mark.parametrize("name", list_profiles())
def test_profile_files_have_no_unknown_top_level_keys(name):
    data = tomllib.loads((PROFILE_DIR / f"{name}.toml").read_text(encoding="utf-8"))
    known = {"host_model", "name", "description", "device", "runtimes", "precision", "batch", "input_shape",
             "channel_multiple", "measure", "notes", "quantization"}
    assert set(data) <= known, set(data) - known


@pytest.mark.parametrize("name", JETSONS)
def test_jetson_profiles(name):
    p = load_profile(name)
    assert p.device == "gpu" and p.runtimes[0] == "tensorrt"
    assert p.precision == "fp16" and p.channel_multiple % 8 == 0
    notes = p.notes
    assert "nvpmodel -m" in notes["power_mode"] and "nvpmodel -q" in notes["power_mode"]
    assert "jetson_clocks" in notes["clocks"] and "GPU" in notes["clocks"]
    assert "JetPack" in notes["software"] and "TensorRT" in notes["software"] and "CUDA" in notes["software"]
    assert notes["board"].startswith("Jetson")


def test_orin_profiles_name_their_modes_and_current_software():
    nano = load_profile("jetson-orin-nano").notes
    assert "MAXN_SUPER" in nano["power_mode"] and "25W" in nano["power_mode"] and "7W" in nano["power_mode"]
    assert "TensorRT 10.3" in nano["software"] and "JetPack 6.2" in nano["software"]
    agx = load_profile("jetson-agx-orin")
    assert "MAXN" in agx.notes["power_mode"] and "50W" in agx.notes["power_mode"]
    assert "TensorRT 10.3" in agx.notes["software"]
    assert agx.measure.runs >= load_profile("jetson-orin-nano").measure.runs


def test_jetson_nano_notes_its_tensorrt_8_2_limit():
    p = load_profile("jetson-nano")
    limit = p.notes["tensorrt_limit"]
    assert "TensorRT 8.2" in limit and "8.5" in limit and "trtexec" in limit
    assert "JetPack 4.6" in p.notes["software"] and "TensorRT 8.2" in p.notes["software"]
    assert "JetPack 4.6" in p.description
    assert "INT8" in p.notes["int8"] and p.precision == "fp16"


def test_raspberry_pi_profile():
    p = load_profile("raspberry-pi-4")
    assert p.device == "cpu" and p.runtimes[0] == "onnxruntime-cpu"
    assert p.measure.threads == 4  # its four Cortex-A72 cores
    assert p.channel_multiple == 4  # NEON: 4 fp32 lanes
    assert "governor" in p.notes["clocks"] and "get_throttled" in p.notes["thermal"]
    assert "64-bit" in p.notes["software"]

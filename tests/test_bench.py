"""`compress bench`: runner choice, shapes, host description, and a real bench of an ONNX file."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from torch import nn

from compress_base.errors import CompressError
from exporters.bench import (
    bench,
    file_sha256,
    format_bench,
    host_info,
    model_format,
    parse_l4t_release,
    parse_nvpmodel,
    resolve_onnx_shape,
    write_bench,
)
from exporters.onnx_export import export_onnx
from exporters.runtime_choice import choose_runtime
from exporters.tensorrt import tensorrt_available
from profiles import load_profile, parse_profile

from conftest import TINY_SHAPE

ROOT = Path(__file__).resolve().parents[1]
SHAPE = TINY_SHAPE
TRT_OK, TRT_REASON = tensorrt_available()


@pytest.fixture(autouse=True)
def _on_every_board(monkeypatch):
    """These tests check runtime choice and errors, not the host check: let board profiles run here."""
    import profiles

    boards = "Jetson Orin Nano | Jetson AGX Orin | Jetson Nano | Raspberry Pi 4"
    monkeypatch.setattr(profiles, "host_model", lambda: boards)


def _profile(runtimes, device="gpu", name="t"):
    return parse_profile(
        {"name": name, "device": device, "runtimes": runtimes, "input_shape": [3, 224, 224]}, "test.toml"
    )


# --------------------------------------------------------------------------------------------
# a real bench through onnxruntime (CPU)
# --------------------------------------------------------------------------------------------


def test_bench_onnx_on_cpu_profile_writes_json(onnx_file, tmp_path):
    result = bench(onnx_file, "cpu", warmup=1, runs=3, threads=1)
    assert result["runtime"] == "onnxruntime-cpu"
    model = result["model"]
    assert model["file"] == "tiny.onnx" and model["format"] == "onnx"
    assert model["sha256"] == hashlib.sha256(Path(onnx_file).read_bytes()).hexdigest()
    assert model["bytes"] == Path(onnx_file).stat().st_size
    cpu = load_profile("cpu")
    assert result["profile"]["name"] == "cpu" and result["profile"]["notes"] == cpu.notes
    stats = result["stats"]
    assert (stats["runs"], stats["warmup"], stats["batch"]) == (3, 1, 1)
    assert stats["input_shape"] == list(SHAPE)  # the model's static shape, not the profile's 224
    assert 0 < stats["p50"] <= stats["p99"] and stats["threads"] == 1
    host = result["host"]
    assert host["cpu"] and host["python"] and host["machine"]
    assert result["created"].endswith("+00:00")

    out = write_bench(result, tmp_path / "runs" / "bench.json")
    assert json.loads(out.read_text()) == result
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"]  # written atomically
    line = format_bench(result)
    assert "tiny.onnx on cpu (onnxruntime-cpu" in line and "p50" in line and "\n" not in line


def test_bench_onnx_batch_and_profile_object(onnx_file):
    import dataclasses

    pi = dataclasses.replace(load_profile("raspberry-pi-4"), host_model=None)  # pretend this is the board
    result = bench(onnx_file, pi, batch=2, warmup=0, runs=2, threads=1)
    assert result["profile"]["name"] == "raspberry-pi-4"
    assert result["stats"]["batch"] == 2 and result["stats"]["runs"] == 2


def test_bench_refuses_a_board_profile_on_another_machine(onnx_file, monkeypatch):
    import profiles

    monkeypatch.setattr(profiles, "host_model", lambda: "AMD EPYC 7B13")
    with pytest.raises(CompressError, match="run compress bench on the board"):
        bench(onnx_file, "raspberry-pi-4", warmup=0, runs=1)
    monkeypatch.setattr(profiles, "host_model", lambda: "Raspberry Pi 4 Model B Rev 1.4")
    assert bench(onnx_file, "raspberry-pi-4", warmup=0, runs=1, threads=1)["profile"]["name"] == "raspberry-pi-4"


def test_bench_user_errors(onnx_file, tmp_path):
    with pytest.raises(CompressError, match="not the input shape 3x224x224; drop --input-shape"):
        bench(onnx_file, "cpu", warmup=0, runs=1, input_shape=(3, 224, 224))
    with pytest.raises(CompressError, match="runs must be an integer >= 1"):
        bench(onnx_file, "cpu", runs=0)
    with pytest.raises(CompressError, match="does not exist"):
        bench(tmp_path / "missing.onnx", "cpu")
    with pytest.raises(CompressError, match="give an ONNX file"):
        bench(tmp_path / "model.pt", "cpu")
    with pytest.raises(CompressError, match="unknown target"):
        bench(onnx_file, "no-such-board")


def test_bench_onnx_on_a_gpu_profile_without_gpu_providers(onnx_file):
    import onnxruntime as ort

    if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers()):
        pytest.skip("this onnxruntime has GPU providers; this checks the error without them")
    with pytest.raises(CompressError) as info:
        bench(onnx_file, "jetson-orin-nano", warmup=0, runs=1)
    msg = str(info.value)
    assert "onnxruntime-tensorrt, onnxruntime-cuda" in msg and "--runtime" in msg and "\n" not in msg
    # an explicit CPU runtime is allowed (with a warning: the profile does not name it)
    result = bench(onnx_file, "jetson-orin-nano", runtime="onnxruntime-cpu", warmup=0, runs=1, threads=1)
    assert result["runtime"] == "onnxruntime-cpu" and result["profile"]["name"] == "jetson-orin-nano"


def test_bench_engine_without_tensorrt(tmp_path):
    if TRT_OK:
        pytest.skip("TensorRT is usable here; this checks the error without it")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(CompressError, match="TensorRT is not installed"):
        bench(engine, "gpu", warmup=0, runs=1)


def test_bench_engine_on_cpu_profile(tmp_path):
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"x")
    with pytest.raises(CompressError, match="CPU target; TensorRT engines need an NVIDIA GPU"):
        bench(engine, "raspberry-pi-4")


@pytest.mark.skipif(not TRT_OK, reason=f"needs TensorRT >= 8.5 and a CUDA GPU: {TRT_REASON}")
def test_bench_engine_with_tensorrt(onnx_file, tmp_path):
    from exporters.tensorrt import build_engine

    engine = tmp_path / "tiny.engine"
    build_engine(onnx_file, engine, precision="fp16", batch=(1, 1, 4), workspace_mb=256)
    result = bench(engine, "gpu", warmup=10, runs=50)
    assert result["runtime"] == "tensorrt" and result["model"]["format"] == "engine"
    assert result["stats"]["settings"]["gpu_compute_ms"]["p50"] > 0
    assert result["stats"]["input_shape"] == list(SHAPE)
    assert "GPU compute" in format_bench(result)


# --------------------------------------------------------------------------------------------
# pure parts
# --------------------------------------------------------------------------------------------


def test_model_format():
    assert model_format(Path("a.onnx")) == "onnx"
    for name in ("a.engine", "a.plan", "a.trt", "A.ENGINE"):
        assert model_format(Path(name)) == "engine"
    with pytest.raises(CompressError, match=r"\.onnx"):
        model_format(Path("a.pt"))


def test_choose_runtime_for_onnx():
    gpu = _profile(["tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "torch-cuda"])
    assert choose_runtime(gpu, "onnx", None, ["onnxruntime-cuda", "onnxruntime-cpu"]) == "onnxruntime-cuda"
    assert choose_runtime(gpu, "onnx", None, ["onnxruntime-tensorrt", "onnxruntime-cuda"]) == "onnxruntime-tensorrt"
    with pytest.raises(CompressError, match="none of profile 't''s onnxruntime runtimes"):
        choose_runtime(gpu, "onnx", None, ["onnxruntime-cpu"])
    assert choose_runtime(gpu, "onnx", "onnxruntime-cpu", ["onnxruntime-cpu"]) == "onnxruntime-cpu"
    with pytest.raises(CompressError, match="not usable here"):
        choose_runtime(gpu, "onnx", "onnxruntime-cuda", ["onnxruntime-cpu"])
    with pytest.raises(CompressError, match="compress engine MODEL.onnx"):
        choose_runtime(gpu, "onnx", "tensorrt", ["onnxruntime-cpu"])
    with pytest.raises(CompressError, match="cannot time an ONNX file"):
        choose_runtime(gpu, "onnx", "torch-cuda", ["onnxruntime-cpu"])
    torch_only = _profile(["torch-cpu"], device="cpu")
    with pytest.raises(CompressError, match="names no onnxruntime runtime"):
        choose_runtime(torch_only, "onnx", None, ["onnxruntime-cpu"])


def test_choose_runtime_for_engines():
    gpu = _profile(["onnxruntime-cuda"])  # engines run on TensorRT even when the list omits it
    assert choose_runtime(gpu, "engine", None, []) == "tensorrt"
    assert choose_runtime(gpu, "engine", "tensorrt", []) == "tensorrt"
    with pytest.raises(CompressError, match="only on the 'tensorrt' runtime"):
        choose_runtime(gpu, "engine", "onnxruntime-cuda", ["onnxruntime-cuda"])
    with pytest.raises(CompressError, match="CPU target"):
        choose_runtime(_profile(["onnxruntime-cpu"], device="cpu"), "engine", None, [])


def test_resolve_onnx_shape():
    assert resolve_onnx_shape("m", ["batch", 3, 16, 16], 4, None, (3, 224, 224)) == (3, 16, 16)
    assert resolve_onnx_shape("m", ["batch", 3, 16, 16], 1, (3, 16, 16), (3, 224, 224)) == (3, 16, 16)
    assert resolve_onnx_shape("m", [None, 3, "h", "w"], 1, None, (3, 224, 224)) == (3, 224, 224)
    assert resolve_onnx_shape("m", [None, 3, "h", "w"], 1, (3, 96, 96), (3, 224, 224)) == (3, 96, 96)
    with pytest.raises(CompressError, match="fixed batch of 1, not 2; bench with --batch 1"):
        resolve_onnx_shape("m", [1, 3, 16, 16], 2, None, (3, 224, 224))
    with pytest.raises(CompressError, match="give a matching --input-shape"):
        resolve_onnx_shape("m", [None, 3, "h", "w"], 1, (1, 96, 96), (3, 224, 224))
    with pytest.raises(CompressError, match="pass --input-shape"):
        resolve_onnx_shape("m", [None, 1, "h", "w"], 1, None, (3, 224, 224))


def test_file_sha256(tmp_path):
    path = tmp_path / "blob"
    data = os.urandom(3 * 1024 + 5)
    path.write_bytes(data)
    assert file_sha256(path, chunk=1024) == hashlib.sha256(data).hexdigest()


def test_parse_host_files():
    assert parse_l4t_release("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic") == "36.4.3"
    assert parse_l4t_release("# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref") == "32.7.4"
    assert parse_l4t_release("garbage") is None
    assert parse_nvpmodel("NV Power Mode: MAXN_SUPER\n2\n") == {"name": "MAXN_SUPER", "id": 2}
    assert parse_nvpmodel("NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n0") == {"name": "15W", "id": 0}
    assert parse_nvpmodel("no mode") is None


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_host_info_on_a_fake_jetson(tmp_path):
    _write(tmp_path, "proc/device-tree/model", "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00")
    _write(tmp_path, "etc/nv_tegra_release", "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic\n")
    _write(tmp_path, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "schedutil\n")
    _write(tmp_path, "sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq", "1728000\n")
    calls = []

    def run(cmd):
        calls.append(cmd)
        return "NV Power Mode: MAXN_SUPER\n2\n" if cmd[0] == "nvpmodel" else None

    info = host_info(tmp_path, run)
    assert info["board"] == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    assert info["l4t"] == "36.4.3" and info["nvpmodel"] == {"name": "MAXN_SUPER", "id": 2}
    assert info["cpu_governor"] == "schedutil" and info["cpu_max_mhz"] == 1728
    assert "throttled" not in info and calls == [["nvpmodel", "-q"]]
    assert json.loads(json.dumps(info)) == info


def test_host_info_on_a_fake_raspberry_pi(tmp_path):
    _write(tmp_path, "proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.5\x00")
    _write(tmp_path, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "performance\n")
    info = host_info(tmp_path, lambda cmd: "throttled=0x0\n" if cmd[0] == "vcgencmd" else None)
    assert info["board"].startswith("Raspberry Pi 4") and info["throttled"] == "0x0"
    assert "l4t" not in info and "nvpmodel" not in info


def test_host_info_on_a_bare_machine(tmp_path):
    info = host_info(tmp_path, lambda cmd: pytest.fail("no board: nothing to run"))
    assert set(info) == {"hostname", "os", "machine", "python", "cpu", "cpu_count"}


# --------------------------------------------------------------------------------------------
# the engine path never needs torch
# --------------------------------------------------------------------------------------------

_NO_TORCH = textwrap.dedent(
    """
    import sys, types
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    {setup}
    from compress_base.errors import CompressError
    import exporters.bench as bench
    import exporters.tensorrt as te
    ok, reason = te.tensorrt_available()
    try:
        bench.bench(sys.argv[1], "gpu", warmup=0, runs=1)
    except CompressError as exc:
        print("CompressError:", exc)
    assert sys.modules.get("torch") is None, "torch was imported"
    print("no torch needed;", ok, reason)
    """
)
# Import the two modules without running exporters/__init__.py.
_BYPASS_PACKAGE_INIT = (
    f"pkg = types.ModuleType('exporters'); pkg.__path__ = [{str(ROOT / 'exporters')!r}]; "
    "sys.modules['exporters'] = pkg"
)


def _run_without_torch(setup: str, engine: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _NO_TORCH.format(setup=setup), str(engine)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def test_engine_bench_modules_do_not_import_torch(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    done = _run_without_torch(_BYPASS_PACKAGE_INIT, engine)
    assert done.returncode == 0, done.stderr
    assert "no torch needed" in done.stdout
    assert "CompressError: " in done.stdout and "TensorRT" in done.stdout


def test_exporters_package_imports_without_torch(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    done = _run_without_torch("", engine)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]


def test_onnx_bench_from_the_command_line_without_torch(tmp_path):
    # a board with onnxruntime but no PyTorch (a Raspberry Pi) times an ONNX file exported elsewhere
    onnx_file = export_onnx(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(), (3, 16, 16), tmp_path / "m.onnx")
    out = tmp_path / "bench.json"
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from compressor.cli import main
        try:
            main(["bench", sys.argv[1], "--target", "cpu", "--runs", "3", "--warmup", "1", "--out", sys.argv[2], "-q"])
        except SystemExit as exc:
            assert sys.modules.get("torch") is None, "torch was imported"
            raise
        """
    )
    done = subprocess.run([sys.executable, "-c", script, str(onnx_file), str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["runtime"] == "onnxruntime-cpu" and data["stats"]["runs"] == 3


def test_a_command_that_needs_torch_says_so_in_one_line(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None
        from compressor.cli import main
        main(["run", "--budget-macs", "300M", "--out", sys.argv[1]])
        """
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: this command needs PyTorch and torchvision (pip install torch torchvision); without them only "
        "compress bench, compress report and compress profiles work"]
    assert not (tmp_path / "out").exists()

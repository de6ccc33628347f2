"""Latency statistics and the runners behind Runner.measure."""
import json
import math

import pytest
import torch
from torch import nn

from compress_base.errors import CompressError
from exporters.runners import OrtRunner, available_runners, make_runner
from exporters.stats import LatencyStats
from exporters.torch_runner import TorchRunner
from profiles import cpu_name

from conftest import TINY_SHAPE, tiny_cnn

SHAPE = TINY_SHAPE
META = dict(
    warmup=3, input_shape=SHAPE, runtime="test", device="cpu", versions={"x": "1"}, threads=1, settings={}
)


def test_stats_percentiles_by_hand():
    # times 1..10: linear interpolation puts p50 at index 4.5 -> 5.5, p90 at 8.1 -> 9.1,
    # p99 at 8.91 -> 9.91; sample std = sqrt(82.5 / 9); throughput = 2 * 1000 / 5.5.
    s = LatencyStats.from_times(list(range(10, 0, -1)), batch=2, **META)
    assert (s.p50, s.p90, s.p99) == pytest.approx((5.5, 9.1, 9.91))
    assert s.mean == pytest.approx(5.5)
    assert s.std == pytest.approx(math.sqrt(82.5 / 9))
    assert s.throughput == pytest.approx(2000 / 5.5)
    assert (s.runs, s.warmup, s.batch) == (10, 3, 2)


def test_stats_single_run_and_bad_input():
    s = LatencyStats.from_times([4.0], batch=1, **META)
    assert (s.p50, s.p99, s.std, s.throughput) == (4.0, 4.0, 0.0, 250.0)
    for bad in ([], [1.0, 0.0], [[1.0]]):
        with pytest.raises(ValueError):
            LatencyStats.from_times(bad, batch=1, **META)


def test_stats_to_dict_is_json():
    d = LatencyStats.from_times([1.0, 2.0, 3.0], batch=1, **META).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["input_shape"] == list(SHAPE) and d["runs"] == 3
    assert {"p50", "p90", "p99", "mean", "std", "throughput", "versions", "settings"} <= set(d)


def test_cpu_name():
    assert isinstance(cpu_name(), str) and cpu_name()


def _check_sane(stats, runtime, batch, warmup, runs):
    assert stats.runtime == runtime
    assert (stats.batch, stats.warmup, stats.runs, stats.input_shape) == (batch, warmup, runs, SHAPE)
    assert 0 < stats.p50 <= stats.p90 <= stats.p99
    assert stats.std >= 0 and stats.mean > 0
    assert stats.throughput == pytest.approx(batch * 1000 / stats.mean)
    assert stats.device


def test_ort_runner_on_file(onnx_file):
    stats = OrtRunner(threads=1).measure(onnx_file, SHAPE, batch=2, warmup=2, runs=7)
    _check_sane(stats, "onnxruntime-cpu", 2, 2, 7)
    assert stats.threads == 1
    assert stats.settings == {
        "providers": ["CPUExecutionProvider"],
        "intra_op_num_threads": 1,
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "execution_mode": "ORT_SEQUENTIAL",
        "clock": "wall",
    }
    assert "onnxruntime" in stats.versions


def test_ort_runner_on_module_exports_first():
    stats = OrtRunner().measure(tiny_cnn(), SHAPE, batch=1, warmup=0, runs=3)
    _check_sane(stats, "onnxruntime-cpu", 1, 0, 3)


def test_ort_runner_user_errors(tmp_path):
    with pytest.raises(CompressError, match="NoSuchExecutionProvider"):
        OrtRunner(["NoSuchExecutionProvider"])
    with pytest.raises(CompressError, match="does not exist"):
        OrtRunner().measure(tmp_path / "missing.onnx", SHAPE)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model")
    with pytest.raises(CompressError, match="cannot load"):
        OrtRunner().measure(junk, SHAPE)


def test_torch_runner_cpu_runs_requested_counts():
    model = tiny_cnn().train()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    stats = TorchRunner("cpu").measure(model, SHAPE, batch=3, warmup=4, runs=6)
    _check_sane(stats, "torch-cpu", 3, 4, 6)
    assert len(calls) == 4 + 6
    assert model.training  # the caller's module is left as it was
    assert stats.versions["torch"] == torch.__version__ and stats.threads >= 1


def test_torch_runner_user_errors(onnx_file):
    with pytest.raises(CompressError, match="nn.Module"):
        TorchRunner().measure(onnx_file, SHAPE)
    with pytest.raises(CompressError, match="runs >= 1"):
        TorchRunner().measure(tiny_cnn(), SHAPE, runs=0)
    with pytest.raises(CompressError, match="not supported"):
        TorchRunner("mps")


def test_torch_runner_cuda():
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine; torch-cuda timing needs a GPU")
    stats = TorchRunner("cuda").measure(tiny_cnn(), SHAPE, batch=2, warmup=3, runs=5)
    _check_sane(stats, "torch-cuda", 2, 3, 5)
    assert stats.device == torch.cuda.get_device_name(0) and "cuda" in stats.versions


def test_torch_runner_cuda_graph_matches_eager_timing_scale():
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine; CUDA-graph timing needs a GPU")
    graphed = TorchRunner("cuda", cuda_graph=True).measure(tiny_cnn(), SHAPE, batch=2, warmup=3, runs=20)
    eager = TorchRunner("cuda").measure(tiny_cnn(), SHAPE, batch=2, warmup=3, runs=20)
    _check_sane(graphed, "torch-cuda", 2, 3, 20)
    assert graphed.settings["mode"] == "CUDA graph replay"
    assert graphed.p50 <= eager.p50 * 1.5  # replay drops launch overhead; it is not slower


def test_cuda_graph_on_cpu_is_a_user_error():
    with pytest.raises(CompressError, match="needs a CUDA device"):
        TorchRunner("cpu", cuda_graph=True)


def test_torch_runner_cuda_absent_is_a_user_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; this checks the error raised without it")
    with pytest.raises(CompressError, match="no CUDA device"):
        TorchRunner("cuda")


def test_available_runners():
    names = available_runners()
    assert "onnxruntime-cpu" in names and "torch-cpu" in names
    assert ("torch-cuda" in names) == torch.cuda.is_available()
    for name in names:
        assert make_runner(name).runtime == name


def test_make_runner():
    runner = make_runner("onnxruntime-cpu", threads=2)
    assert isinstance(runner, OrtRunner) and runner.threads == 2
    assert isinstance(make_runner("torch-cpu"), TorchRunner)
    from exporters.tensorrt import TrtRunner

    assert isinstance(make_runner("tensorrt", precision="fp32"), TrtRunner)  # builds lazily: no GPU needed yet
    with pytest.raises(CompressError, match="no runner for runtime 'openvino'"):
        make_runner("openvino")


def test_make_runner_with_the_cpu_clock():
    from exporters.runners import CpuClockOrtRunner

    runner = make_runner("onnxruntime-cpu", threads=1, clock="cpu")
    assert isinstance(runner, CpuClockOrtRunner) and runner.threads == 1 and runner.clock_name == "thread cpu time"
    assert make_runner("onnxruntime-cpu", threads=1).clock_name == "wall"
    for runtime, threads in (("onnxruntime-cpu", 2), ("onnxruntime-cpu", 0), ("torch-cpu", 1)):
        with pytest.raises(CompressError, match="the cpu clock times one thread"):
            make_runner(runtime, threads=threads, clock="cpu")
    with pytest.raises(CompressError, match="unknown clock 'gpu'"):
        make_runner("onnxruntime-cpu", threads=1, clock="gpu")


def test_one_runtime_choice_for_runs_tables_and_bench():
    """A run and a latency table take any runtime of the profile usable here (TensorRT builds its
    engine from the ONNX file, torch times a module); bench times an ONNX file with onnxruntime only."""
    from exporters.runtime_choice import choose_runtime
    from profiles import load_profile

    cpu, gpu = load_profile("cpu"), load_profile("gpu")
    assert choose_runtime(cpu) == "onnxruntime-cpu"  # what this machine has (available_runners)
    assert choose_runtime(cpu, usable=["torch-cpu"]) == "torch-cpu"
    with pytest.raises(CompressError, match=r"onnxruntime runtimes \(onnxruntime-cpu\) is usable here"):
        choose_runtime(cpu, "onnx", usable=["torch-cpu"])
    gpu_box = ["tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "torch-cuda", "torch-cpu"]
    assert choose_runtime(gpu, usable=gpu_box) == "tensorrt"
    assert choose_runtime(gpu, "onnx", usable=gpu_box) == "onnxruntime-cuda"
    assert choose_runtime(gpu, "engine") == "tensorrt"
    assert choose_runtime(gpu, usable=["onnxruntime-cpu", "torch-cuda"]) == "torch-cuda"
    with pytest.raises(CompressError, match="^target 'gpu' measures with tensorrt, onnxruntime-tensorrt, "
                                            "onnxruntime-cuda, torch-cuda and none of them is usable on this "
                                            "machine: run on the target device, or use --target cpu$"):
        choose_runtime(gpu, usable=["onnxruntime-cpu", "torch-cpu"])
    with pytest.raises(ValueError, match="unknown model format 'pt'"):
        choose_runtime(cpu, "pt")


def test_ort_node_profile_names_the_slowest_nodes():

    from exporters.runners import OrtRunner

    net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 4, 1), nn.Flatten(),
                        nn.Linear(4 * 16 * 16, 10)).eval()
    stats = OrtRunner(threads=1, profile_nodes=2).measure(net, (3, 16, 16), warmup=1, runs=3)
    nodes = stats.settings["slowest_nodes"]
    assert len(nodes) == 2 and nodes[0]["mean_ms"] >= nodes[1]["mean_ms"] > 0
    assert nodes[0]["op"] == "Conv" and 0 < nodes[0]["share"] <= 1  # the 3x3 conv dominates


def test_cpu_clock_runner_times_by_thread_cpu_time(onnx_file):
    from exporters.runners import CpuClockOrtRunner

    stats = CpuClockOrtRunner().measure(onnx_file, SHAPE, batch=1, warmup=1, runs=5)
    _check_sane(stats, "onnxruntime-cpu", 1, 1, 5)
    assert stats.threads == 1 and stats.settings["clock"] == "thread cpu time"
    assert stats.settings["intra_op_num_threads"] == 1
    with pytest.raises(CompressError, match="times ONNX files"):
        CpuClockOrtRunner().measure(tiny_cnn(), SHAPE)

"""Latency runners: one interface, ``Runner.measure``, over onnxruntime and eager PyTorch.

Runtime names match the ``runtimes`` lists of the target profiles: ``onnxruntime-cpu``,
``onnxruntime-cuda``, ``onnxruntime-tensorrt``, ``torch-cpu``, ``torch-cuda``.
"""
from __future__ import annotations

import abc
import copy
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from compressor.errors import CompressError
from exporters.onnx_export import first_line, export_onnx, random_input
from exporters.stats import LatencyStats, cpu_name

log = logging.getLogger(__name__)

ORT_PROVIDERS = {
    "onnxruntime-tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    "onnxruntime-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "onnxruntime-cpu": ["CPUExecutionProvider"],
}
TORCH_DEVICES = {"torch-cuda": "cuda", "torch-cpu": "cpu"}


class Runner(abc.ABC):
    """Times inferences of one model on one runtime."""

    runtime: str

    def measure(
        self,
        model: str | os.PathLike | nn.Module,
        input_shape: Sequence[int],
        batch: int = 1,
        warmup: int = 10,
        runs: int = 50,
    ) -> LatencyStats:
        """Run ``warmup`` untimed then ``runs`` timed inferences on a random ``(batch, *input_shape)``."""
        if warmup < 0 or runs < 1:
            raise CompressError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
        x = random_input(input_shape, batch)
        times, meta = self._time(model, x, warmup, runs)
        stats = LatencyStats.from_times(
            times, batch=batch, input_shape=tuple(x.shape[1:]), warmup=warmup, runtime=self.runtime, **meta
        )
        log.info(
            "%s: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms at batch %d (%d runs)",
            self.runtime, stats.p50, stats.p90, stats.p99, batch, runs,
        )
        return stats

    @abc.abstractmethod
    def _time(self, model, x: torch.Tensor, warmup: int, runs: int) -> tuple[list[float], dict]:
        """Per-run times in ms, and the ``device``, ``versions``, ``threads``, ``settings`` fields."""


class OrtRunner(Runner):
    """onnxruntime on an ONNX file (an nn.Module is exported to a temporary file first).

    ``providers`` defaults to the CPU provider; ``threads`` sets intra-op threads (0: onnxruntime's
    default, one per physical core). Inputs are host numpy arrays, so on GPU providers the
    host-device copies are part of each timed run. With ``profile_nodes`` > 0, a separate
    profiled session (onnxruntime's JSON profile, after the timed runs so its overhead stays out
    of them) names that many slowest nodes in ``settings["slowest_nodes"]``.
    """

    def __init__(self, providers: Sequence[str] | None = None, threads: int = 0, profile_nodes: int = 0):
        self.providers = list(providers or ["CPUExecutionProvider"])
        self.threads = threads
        self.profile_nodes = profile_nodes
        missing = [p for p in self.providers if p not in ort.get_available_providers()]
        if missing:
            raise CompressError(
                f"onnxruntime here lacks {', '.join(missing)} (it has "
                f"{', '.join(ort.get_available_providers())}); install the onnxruntime build that "
                "has it or choose another runtime"
            )
        self.runtime = "onnxruntime-" + self.providers[0].removesuffix("ExecutionProvider").lower()

    def _time(self, model, x, warmup, runs):
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(model, x.shape[1:], Path(tmp) / "model.onnx") if isinstance(model, nn.Module) \
                else Path(model)
            times, meta = self._time_file(path, x, warmup, runs)
            if self.profile_nodes > 0:
                meta["settings"]["slowest_nodes"] = self._slowest_nodes(path, x, tmp)
        return times, meta

    def _time_file(self, path: Path, x, warmup, runs):
        session, options = self._session(path)
        inp = session.get_inputs()[0]
        dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        feed = {inp.name: x.numpy().astype(dtype)}
        for _ in range(warmup):
            session.run(None, feed)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - start) * 1e3)
        used = session.get_providers()
        on_gpu = used[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        return times, {
            "device": torch.cuda.get_device_name(0) if on_gpu and torch.cuda.is_available() else cpu_name(),
            "versions": {"onnxruntime": ort.__version__},
            "threads": self.threads,
            "settings": {
                "providers": used,
                "intra_op_num_threads": options.intra_op_num_threads,
                "graph_optimization_level": options.graph_optimization_level.name,
                "execution_mode": options.execution_mode.name,
            },
        }

    def _slowest_nodes(self, path: Path, x, folder: str, runs: int = 10) -> list[dict]:
        """The ``profile_nodes`` nodes with the largest mean kernel time in onnxruntime's profile."""
        session, _ = self._session(path, profile_prefix=str(Path(folder) / "ort-profile"))
        inp = session.get_inputs()[0]
        feed = {inp.name: x.numpy().astype(np.float16 if inp.type == "tensor(float16)" else np.float32)}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        total: dict[str, list] = {}
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                entry = total.setdefault(e["name"].removesuffix("_kernel_time"), [e.get("args", {}).get("op_name", "?"), 0.0])
                entry[1] += e.get("dur", 0) / 1e3 / runs
        overall = sum(v[1] for v in total.values()) or 1.0
        ranked = sorted(total.items(), key=lambda kv: -kv[1][1])[: self.profile_nodes]
        return [{"node": name, "op": op, "mean_ms": round(ms, 4), "share": round(ms / overall, 4)}
                for name, (op, ms) in ranked]

    def _session(self, path: Path, profile_prefix: str | None = None) -> tuple[ort.InferenceSession, ort.SessionOptions]:
        if not path.is_file():
            raise CompressError(f"ONNX file {path} does not exist; export the model first")
        options = ort.SessionOptions()
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        options.intra_op_num_threads = self.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), options, providers=self.providers)
        except Exception as exc:
            raise CompressError(
                f"onnxruntime cannot load {path}: {first_line(exc)}; re-export the model"
            ) from exc
        if session.get_providers()[0] != self.providers[0]:
            raise CompressError(
                f"onnxruntime fell back from {self.providers[0]} to {session.get_providers()[0]}; "
                "check the CUDA/TensorRT libraries are installed or choose another runtime"
            )
        return session, options


class TorchRunner(Runner):
    """Eager PyTorch under ``torch.inference_mode`` on a copy of the module placed on ``device``.

    CPU runs are timed with ``time.perf_counter``; CUDA runs with CUDA events, synchronising
    after each run. ``cuda_graph=True`` (CUDA only) captures one forward pass in a CUDA graph and
    times its replays, which leaves out Python and kernel-launch overhead.
    """

    def __init__(self, device: str = "cpu", cuda_graph: bool = False):
        self.device = torch.device(device)
        self.cuda_graph = cuda_graph
        if self.device.type not in ("cpu", "cuda"):
            raise CompressError(f"torch device {device!r} is not supported; use 'cpu' or 'cuda'")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise CompressError(
                "torch finds no CUDA device here; use device='cpu' or a machine with an NVIDIA GPU"
            )
        if cuda_graph and self.device.type != "cuda":
            raise CompressError("CUDA-graph timing needs a CUDA device; use cuda_graph=False on the CPU")
        self.runtime = f"torch-{self.device.type}"

    def _time(self, model, x, warmup, runs):
        if not isinstance(model, nn.Module):
            raise CompressError(
                f"{self.runtime} times an nn.Module, not {model!r}; "
                "use an onnxruntime runtime for ONNX files"
            )
        module = copy.deepcopy(model).to(self.device).eval()
        x = x.to(self.device)
        cuda = self.device.type == "cuda"
        with torch.inference_mode():
            for _ in range(warmup):
                module(x)
            if self.cuda_graph:
                times = _time_cuda(_graphed(module, x), x, runs)
            else:
                times = _time_cuda(module, x, runs) if cuda else _time_cpu(module, x, runs)
        versions = {"torch": torch.__version__}
        if cuda:
            versions |= {"cuda": torch.version.cuda, "cudnn": str(torch.backends.cudnn.version())}
        return times, {
            "device": torch.cuda.get_device_name(self.device) if cuda else cpu_name(),
            "versions": versions,
            "threads": torch.get_num_threads(),
            "settings": {"device": str(self.device),
                         "mode": "CUDA graph replay" if self.cuda_graph else "eager, torch.inference_mode"},
        }


def _time_cpu(module: nn.Module, x: torch.Tensor, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        module(x)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _graphed(module: nn.Module, x: torch.Tensor):
    """A callable replaying one captured forward pass of ``module`` on the static input ``x``."""
    side = torch.cuda.Stream(x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):  # warm up on a side stream, as capture requires
        for _ in range(3):
            module(x)
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        module(x)
    return lambda _x: graph.replay()


def _time_cuda(module, x: torch.Tensor, runs: int) -> list[float]:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(x.device)
    times = []
    for _ in range(runs):
        start.record()
        module(x)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def available_runners() -> list[str]:
    """Runtime names usable here: onnxruntime providers present, torch-cpu, torch-cuda with a GPU."""
    have = ort.get_available_providers()
    names = [name for name, providers in ORT_PROVIDERS.items() if providers[0] in have]
    if torch.cuda.is_available():
        names.append("torch-cuda")
    names.append("torch-cpu")
    from exporters.tensorrt import tensorrt_available

    if tensorrt_available()[0]:
        names.insert(0, "tensorrt")
    return names


def make_runner(runtime: str, threads: int = 0, precision: str = "fp16", profile_nodes: int = 0):
    """The runner for a profile's runtime name; ``threads`` and ``profile_nodes`` apply to
    onnxruntime only, ``precision`` to TensorRT (which builds an engine from the ONNX file)."""
    if runtime == "tensorrt":
        from exporters.tensorrt import TrtRunner

        return TrtRunner(precision=precision)
    if runtime in ORT_PROVIDERS:
        return OrtRunner(ORT_PROVIDERS[runtime], threads, profile_nodes)
    if runtime in TORCH_DEVICES:
        return TorchRunner(TORCH_DEVICES[runtime])
    if runtime == "torch-cuda-graph":
        return TorchRunner("cuda", cuda_graph=True)
    raise CompressError(
        f"no runner for runtime {runtime!r}; choose one of {', '.join([*ORT_PROVIDERS, *TORCH_DEVICES])}"
    )

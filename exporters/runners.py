"""Latency runners: one interface, ``Runner.measure``, over onnxruntime, eager PyTorch and TensorRT.

Runtime names match the ``runtimes`` lists of the target profiles: ``onnxruntime-cpu``,
``onnxruntime-cuda``, ``onnxruntime-tensorrt``, ``torch-cpu``, ``torch-cuda``, ``tensorrt``. Timing
an ONNX file with onnxruntime needs no PyTorch (a board that measures what was exported
elsewhere); :class:`~exporters.torch_runner.TorchRunner` and exporting a module do.
"""
from __future__ import annotations

import abc
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from compress_base.errors import CompressError, first_line
from exporters.inputs import sample_input
from exporters.stats import LatencyStats
from profiles import cpu_name

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
        model,  # an ONNX file, or an nn.Module where the runner takes one
        input_shape: Sequence[int],
        batch: int = 1,
        warmup: int = 10,
        runs: int = 50,
    ) -> LatencyStats:
        """Run ``warmup`` untimed then ``runs`` timed inferences on a random ``(batch, *input_shape)``."""
        if warmup < 0 or runs < 1:
            raise CompressError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
        x = sample_input(input_shape, batch)
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
    def _time(self, model, x: np.ndarray, warmup: int, runs: int) -> tuple[list[float], dict]:
        """Per-run times in ms on the input ``x``, and the ``device``, ``versions``, ``threads``,
        ``settings`` fields."""


class OrtRunner(Runner):
    """onnxruntime on an ONNX file (an nn.Module is exported to a temporary file first).

    ``providers`` defaults to the CPU provider; ``threads`` sets intra-op threads (0: onnxruntime's
    default, one per physical core). Inputs are host numpy arrays, so on GPU providers the
    host-device copies are part of each timed run. With ``profile_nodes`` > 0, a separate
    profiled session (onnxruntime's JSON profile, after the timed runs so its overhead stays out
    of them) names that many slowest nodes in ``settings["slowest_nodes"]``.
    """

    clock = staticmethod(time.perf_counter)  # seconds; a subclass may time by another clock
    clock_name = "wall"

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
            if isinstance(model, (str, os.PathLike)):
                path = Path(model)
            else:  # an nn.Module: exporting it needs torch
                from exporters.onnx_export import export_onnx

                path = export_onnx(model, x.shape[1:], Path(tmp) / "model.onnx")
            times, meta = self._time_file(path, x, warmup, runs)
            if self.profile_nodes > 0:
                meta["settings"]["slowest_nodes"] = self._slowest_nodes(path, x, tmp)
        return times, meta

    def _time_file(self, path: Path, x, warmup, runs):
        session, options = self._session(path)
        inp = session.get_inputs()[0]
        dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        feed = {inp.name: x.astype(dtype)}
        for _ in range(warmup):
            session.run(None, feed)
        times = []
        for _ in range(runs):
            start = self.clock()
            session.run(None, feed)
            times.append(max(self.clock() - start, 1e-6) * 1e3)  # a coarse clock may read 0
        used = session.get_providers()
        on_gpu = used[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        return times, {
            "device": _gpu_name() if on_gpu else cpu_name(),
            "versions": {"onnxruntime": ort.__version__},
            "threads": self.threads,
            "settings": {
                "providers": used,
                "intra_op_num_threads": options.intra_op_num_threads,
                "graph_optimization_level": options.graph_optimization_level.name,
                "execution_mode": options.execution_mode.name,
                "clock": self.clock_name,
            },
        }

    def _slowest_nodes(self, path: Path, x, folder: str, runs: int = 10) -> list[dict]:
        """The ``profile_nodes`` nodes with the largest mean kernel time in onnxruntime's profile."""
        session, _ = self._session(path, profile_prefix=str(Path(folder) / "ort-profile"))
        inp = session.get_inputs()[0]
        feed = {inp.name: x.astype(np.float16 if inp.type == "tensor(float16)" else np.float32)}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        total: dict[str, list] = {}
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                op = e.get("args", {}).get("op_name", "?")
                entry = total.setdefault(e["name"].removesuffix("_kernel_time"), [op, 0.0])
                entry[1] += e.get("dur", 0) / 1e3 / runs
        overall = sum(v[1] for v in total.values()) or 1.0
        ranked = sorted(total.items(), key=lambda kv: -kv[1][1])[: self.profile_nodes]
        return [{"node": name, "op": op, "mean_ms": round(ms, 4), "share": round(ms / overall, 4)}
                for name, (op, ms) in ranked]

    def _session(self, path: Path,
                 profile_prefix: str | None = None) -> tuple[ort.InferenceSession, ort.SessionOptions]:
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


def _gpu_name() -> str:
    """The name of GPU 0, from torch when it is installed."""
    try:
        import torch
    except ImportError:
        return "CUDA GPU"
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CUDA GPU"


def available_runners() -> list[str]:
    """Runtime names usable here: onnxruntime providers present, torch-cpu and torch-cuda (with a
    GPU) where torch is installed, tensorrt where it works."""
    have = ort.get_available_providers()
    names = [name for name, providers in ORT_PROVIDERS.items() if providers[0] in have]
    try:
        import torch
    except ImportError:
        pass
    else:
        if torch.cuda.is_available():
            names.append("torch-cuda")
        names.append("torch-cpu")
    from exporters.tensorrt import tensorrt_available

    if tensorrt_available()[0]:
        names.insert(0, "tensorrt")
    return names


CLOCKS = ("wall", "cpu")


def make_runner(runtime: str, threads: int = 0, precision: str = "fp16", *, profile_nodes: int = 0,
                clock: str = "wall"):
    """The runner for a runtime name (:func:`exporters.runtime_choice.choose_runtime` picks it);
    ``threads`` and ``profile_nodes`` apply to onnxruntime only, ``precision`` to TensorRT (which
    builds an engine from the ONNX file). ``clock="cpu"`` (onnxruntime-cpu with one thread only)
    times each inference by the CPU time of the thread that runs it (:class:`CpuClockOrtRunner`)."""
    if clock not in CLOCKS:
        raise CompressError(f"unknown clock {clock!r}: use one of {', '.join(CLOCKS)}")
    if clock == "cpu":
        if runtime != "onnxruntime-cpu" or threads != 1:
            raise CompressError(f"the cpu clock times one thread: it needs runtime onnxruntime-cpu with 1 thread, "
                                f"not {runtime} with {threads}; use the wall clock")
        return CpuClockOrtRunner(profile_nodes)
    if runtime == "tensorrt":
        from exporters.tensorrt import TrtRunner

        return TrtRunner(precision=precision)
    if runtime in ORT_PROVIDERS:
        return OrtRunner(ORT_PROVIDERS[runtime], threads, profile_nodes)
    if runtime in TORCH_DEVICES or runtime == "torch-cuda-graph":
        from exporters.torch_runner import TorchRunner

        if runtime == "torch-cuda-graph":
            return TorchRunner("cuda", cuda_graph=True)
        return TorchRunner(TORCH_DEVICES[runtime])
    raise CompressError(
        f"no runner for runtime {runtime!r}; choose one of {', '.join([*ORT_PROVIDERS, *TORCH_DEVICES])}"
    )


class CpuClockOrtRunner(OrtRunner):
    """onnxruntime on the CPU with one intra-op thread, each run timed by the CPU time of the
    calling thread (``time.thread_time``), where onnxruntime then does all the work.

    On an idle machine this equals the wall-clock time; on a shared one it leaves out the time
    the thread waited for a core, which otherwise inflates long inferences far more than short
    ones (a 40 ms inference is preempted in most runs, a 0.1 ms layer in almost none), so that a
    sum of layers and a whole model would be timed on different scales.
    """

    clock = staticmethod(time.thread_time)
    clock_name = "thread cpu time"

    def __init__(self, profile_nodes: int = 0):
        super().__init__(["CPUExecutionProvider"], threads=1, profile_nodes=profile_nodes)

    def _time(self, model, x, warmup, runs):
        if not isinstance(model, (str, os.PathLike)):
            raise CompressError("the cpu clock times ONNX files; export the model first")
        return super()._time(model, x, warmup, runs)

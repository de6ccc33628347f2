"""Timing an ``nn.Module`` in eager PyTorch on the CPU or a CUDA GPU (optionally as CUDA-graph replays)."""
from __future__ import annotations

import copy
import time

import torch
from torch import nn

from compress_base.errors import CompressError
from exporters.runners import Runner
from profiles import cpu_name


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
        x = torch.from_numpy(x).to(self.device)
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

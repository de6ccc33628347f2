"""CUDA buffers, streams and events for TensorRT, from torch or from pycuda.

Both backends offer the same small interface (device/host buffers, streams, timing events,
copies), so the builder and the runner need neither library directly; :func:`make_backend`
picks one. torch and pycuda are imported only when a backend is made.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from compress_base.errors import CompressError
from exporters.tensorrt.availability import cuda_backend_probe, no_cuda_device


@dataclass
class DeviceBuffer:
    ptr: int
    nbytes: int
    handle: Any = None


@dataclass
class HostBuffer:
    array: np.ndarray
    handle: Any = None


class _Backend:
    """What torch's and pycuda's events have in common."""

    name: str

    def record(self, event, stream) -> None:
        event.record(stream)

    def synchronize(self, event) -> None:
        event.synchronize()


class TorchCuda(_Backend):
    """CUDA buffers, streams and events from torch (pinned host memory for the copies)."""

    name = "torch"

    def __init__(self, device: int = 0):
        import torch

        if not torch.cuda.is_available():
            raise CompressError("torch finds no CUDA device here; run on a machine with an NVIDIA GPU")
        self.torch = torch
        self.device = torch.device("cuda", device)
        torch.cuda.set_device(self.device)

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        t = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, device=self.device)
        return DeviceBuffer(t.data_ptr(), nbytes, t)

    def host_buffer(self, shape, dtype) -> HostBuffer:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        t = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, pin_memory=True)
        return HostBuffer(t.numpy()[:nbytes].view(dtype).reshape(shape), t)

    def stream(self):
        return self.torch.cuda.Stream(device=self.device)

    def stream_handle(self, stream) -> int:
        return int(stream.cuda_stream)

    def event(self):
        return self.torch.cuda.Event(enable_timing=True)

    def elapsed_ms(self, start, end) -> float:
        return float(start.elapsed_time(end))

    def _copy_async(self, dst, src, nbytes: int, stream) -> None:
        with self.torch.cuda.stream(stream):
            dst[:nbytes].copy_(src[:nbytes], non_blocking=True)

    def h2d(self, dev: DeviceBuffer, host: HostBuffer, stream) -> None:
        self._copy_async(dev.handle, host.handle, host.array.nbytes, stream)

    def d2h(self, host: HostBuffer, dev: DeviceBuffer, stream) -> None:
        self._copy_async(host.handle, dev.handle, host.array.nbytes, stream)

    def copy_to_device(self, dev: DeviceBuffer, array: np.ndarray) -> None:
        src = self.torch.from_numpy(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
        dev.handle[: src.numel()].copy_(src)
        self.torch.cuda.synchronize(self.device)

    def device_name(self) -> str:
        return self.torch.cuda.get_device_name(self.device)

    def versions(self) -> dict:
        return {"cuda": str(self.torch.version.cuda), "torch": self.torch.__version__}

    def close(self) -> None:
        pass


class PyCuda(_Backend):
    """CUDA buffers, streams and events from pycuda, in the device's primary context."""

    name = "pycuda"

    def __init__(self, device: int = 0):
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() <= device:
            raise CompressError(f"pycuda finds no CUDA device {device}; run on a machine with an NVIDIA GPU")
        self.cuda = cuda
        self.dev = cuda.Device(device)
        self.ctx = self.dev.retain_primary_context()  # the context TensorRT's runtime API uses
        self.ctx.push()

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        alloc = self.cuda.mem_alloc(max(nbytes, 1))
        return DeviceBuffer(int(alloc), nbytes, alloc)

    def host_buffer(self, shape, dtype) -> HostBuffer:
        return HostBuffer(self.cuda.pagelocked_empty(tuple(shape), np.dtype(dtype)))

    def stream(self):
        return self.cuda.Stream()

    def stream_handle(self, stream) -> int:
        return int(stream.handle)

    def event(self):
        return self.cuda.Event()

    def elapsed_ms(self, start, end) -> float:
        return float(end.time_since(start))

    def h2d(self, dev: DeviceBuffer, host: HostBuffer, stream) -> None:
        self.cuda.memcpy_htod_async(dev.handle, host.array, stream)

    def d2h(self, host: HostBuffer, dev: DeviceBuffer, stream) -> None:
        self.cuda.memcpy_dtoh_async(host.array, dev.handle, stream)

    def copy_to_device(self, dev: DeviceBuffer, array: np.ndarray) -> None:
        self.cuda.memcpy_htod(dev.handle, np.ascontiguousarray(array))

    def device_name(self) -> str:
        return self.dev.name()

    def versions(self) -> dict:
        import pycuda

        driver = self.cuda.get_driver_version()  # e.g. 12060
        return {
            "cuda": ".".join(map(str, self.cuda.get_version()[:2])),
            "cuda_driver": f"{driver // 1000}.{driver % 1000 // 10}",
            "pycuda": getattr(pycuda, "VERSION_TEXT", "unknown"),
        }

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ctx.pop()


def make_backend(backend="auto", device: int = 0):
    """``"torch"``, ``"pycuda"``, ``"auto"`` (torch with CUDA if present, else pycuda) or an object."""
    if not isinstance(backend, str):
        return backend
    if backend == "auto":
        backend, why = cuda_backend_probe()
        if backend is None:
            raise CompressError(no_cuda_device(why))
    if backend == "torch":
        return TorchCuda(device)
    if backend == "pycuda":
        try:
            return PyCuda(device)
        except ImportError:
            raise CompressError("pycuda is not installed: pip install pycuda, or install torch with CUDA") from None
    raise CompressError(f"CUDA backend {backend!r} is not supported; use 'auto', 'torch' or 'pycuda'")

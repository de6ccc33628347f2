"""An engine's input and output tensors, and the host/device buffers bound to an execution context."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from compress_base.errors import CompressError
from exporters.inputs import check_input_size
from exporters.tensorrt.availability import enum_name, numpy_dtype
from exporters.tensorrt.cuda import DeviceBuffer, HostBuffer
from exporters.tensorrt.shapes import format_shape


@dataclass
class TensorSpec:
    """One I/O tensor of an engine."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: np.dtype
    profile: tuple[tuple[int, ...], ...] | None = None  # (min, opt, max) of a dynamic input


def describe_io(engine) -> list[TensorSpec]:
    """The engine's I/O tensors in order (inputs and outputs), with profile 0 ranges of inputs."""
    specs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = enum_name(engine.get_tensor_mode(name)) == "INPUT"
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        prof = None
        if is_input and any(d < 0 for d in shape):
            prof = tuple(tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(name, 0))
        specs.append(TensorSpec(name, is_input, shape, numpy_dtype(engine.get_tensor_dtype(name)), prof))
    return specs


@dataclass
class Binding:
    spec: TensorSpec
    shape: tuple[int, ...]
    host: HostBuffer
    device: DeviceBuffer


def random_feed(shape: Sequence[int], dtype, seed: int = 0) -> np.ndarray:
    """Seeded standard-normal input (zeros for integer and boolean inputs)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(dtype)
    return np.zeros(tuple(shape), dtype)


def bind(engine, context, backend, shapes: dict[str, tuple[int, ...]]) -> tuple[list[Binding], list[Binding]]:
    """Set input shapes, allocate host/device buffers for every I/O tensor and set their addresses."""
    specs = describe_io(engine)
    for spec in specs:
        if spec.is_input:
            shape = tuple(shapes[spec.name])
            check_input_size(shape[1:], shape[0] if shape else 1, f"engine input '{spec.name}'")  # before allocating
            if not context.set_input_shape(spec.name, shapes[spec.name]):
                raise CompressError(
                    f"TensorRT rejects shape {format_shape(shapes[spec.name])} for input '{spec.name}'; use a "
                    "shape within the engine's profile"
                )
    inputs, outputs = [], []
    for spec in specs:
        if spec.is_input:
            shape = tuple(shapes[spec.name])
        else:
            shape = tuple(int(d) for d in context.get_tensor_shape(spec.name))
        if any(d < 0 for d in shape):
            raise CompressError(
                f"engine output '{spec.name}' has a data-dependent shape {format_shape(shape)}; this runner "
                "handles fixed-shape outputs only"
            )
        host = backend.host_buffer(shape, spec.dtype)
        dev = backend.device_buffer(host.array.nbytes)
        if not context.set_tensor_address(spec.name, dev.ptr):
            raise CompressError(f"TensorRT rejects the buffer of tensor '{spec.name}'")
        (inputs if spec.is_input else outputs).append(Binding(spec, shape, host, dev))
    return inputs, outputs

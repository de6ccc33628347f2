"""TensorRT: build a serialized engine from an ONNX file, and time an engine the way trtexec does.

One code path for TensorRT 10.3 (JetPack 6) to 11.x, the names it calls checked against the real
bindings of 10.3.0, 10.13, 10.16 and 11.4 (10.0 to 10.2 are accepted where they have every name).
Engines are strongly typed networks built from an ONNX whose precision is explicit (Q/DQ for int8,
fp16 weights for fp16; :mod:`exporters.precision` writes them), with no weak-typing flag and no
implicit INT8 calibrator (TensorRT 11 removed both; see ``builder``). Running an engine also works
on TensorRT 8.5 and later, the first releases with the named-tensor API (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``). Older releases (8.2 on the original Jetson Nano)
are refused with a one-line reason, and so is a TensorRT that lacks a name this package calls.

``tensorrt``, ``pycuda``, ``torch`` and ``onnx`` are imported lazily, only when an engine is built
or run, so this package imports and its pure helpers run on machines without them, and an engine
can be timed on a board that has TensorRT and pycuda but no PyTorch. Device buffers come from
torch CUDA tensors where torch with CUDA is installed, else from pycuda.

Modules, in dependency order:

- ``availability``: is TensorRT usable here; the lazy import, version and API-name checks, the
  Builder/Runtime constructors, logger, enum/dtype names
- ``shapes``: batch ranges, input shapes, optimization-profile shapes (no TensorRT)
- ``caches``: timing-cache files
- ``engine_onnx``: the precision an ONNX holds, and the ONNX prepared for an engine
- ``layers``: layers per precision from the engine inspector
- ``cuda``: CUDA buffers, streams and events from torch or pycuda
- ``builder``: :func:`build_engine` and its argument checks
- ``bindings``: an engine's I/O tensors and their host/device buffers
- ``timing``: trtexec-style timing and LatencyStats from the event times
- ``runner``: :class:`TrtRunner` and :func:`compare_with_onnxruntime`

Everything that does not need TensorRT is a plain function or class, tested without a GPU; the
TensorRT calls are tested against fakes of the ``tensorrt`` module generated from the real
bindings' names (tests/_trt_fake.py). The names below are re-exported; a test that replaces one
(``_import_trt``, ``make_backend``, ...) must do so in each module that imports it, as
``tests/test_tensorrt.py``'s ``patch_trt`` does.
"""
from exporters.tensorrt.availability import (
    API,
    NOT_INSTALLED,
    check_trt_version,
    cuda_backend_probe,
    enum_name,
    missing_api,
    numpy_dtype,
    parse_version,
    require_tensorrt,
    severity_level,
    tensorrt_available,
)
from exporters.tensorrt.bindings import Binding, TensorSpec, bind, describe_io, random_feed
from exporters.tensorrt.builder import (
    DEFAULT_BATCH,
    PRECISIONS,
    BuildArgs,
    build_engine,
    format_parser_error,
    validate_build_args,
)
from exporters.tensorrt.caches import read_timing_cache, resolve_timing_cache, write_bytes_atomic
from exporters.tensorrt.cuda import DeviceBuffer, HostBuffer, PyCuda, TorchCuda, make_backend
from exporters.tensorrt.engine_onnx import onnx_for_engine, onnx_input, onnx_precision, prepared_path
from exporters.tensorrt.layers import engine_layers, format_layers, summarize_layers
from exporters.tensorrt.runner import ENGINE_SUFFIXES, TrtRunner, compare_with_onnxruntime
from exporters.tensorrt.shapes import parse_batch_range, parse_sample_shape, profile_shapes, resolve_input_shape
from exporters.tensorrt.timing import assemble_stats, time_engine

__all__ = [
    "API",
    "DEFAULT_BATCH",
    "ENGINE_SUFFIXES",
    "NOT_INSTALLED",
    "PRECISIONS",
    "Binding",
    "BuildArgs",
    "DeviceBuffer",
    "HostBuffer",
    "PyCuda",
    "TensorSpec",
    "TorchCuda",
    "TrtRunner",
    "assemble_stats",
    "bind",
    "build_engine",
    "check_trt_version",
    "compare_with_onnxruntime",
    "cuda_backend_probe",
    "describe_io",
    "engine_layers",
    "enum_name",
    "format_parser_error",
    "format_layers",
    "make_backend",
    "missing_api",
    "numpy_dtype",
    "onnx_for_engine",
    "onnx_input",
    "onnx_precision",
    "parse_batch_range",
    "parse_sample_shape",
    "parse_version",
    "prepared_path",
    "profile_shapes",
    "random_feed",
    "read_timing_cache",
    "require_tensorrt",
    "resolve_input_shape",
    "resolve_timing_cache",
    "severity_level",
    "summarize_layers",
    "tensorrt_available",
    "time_engine",
    "validate_build_args",
    "write_bytes_atomic",
]

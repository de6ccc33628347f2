"""TensorRT: build a serialized engine from an ONNX file, and time an engine the way trtexec does.

Written against the TensorRT 10 Python API; it also runs on TensorRT 8.5 and 8.6, the first
releases with the named-tensor API it relies on (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``). Older releases (8.2 on the original Jetson Nano) are refused with a
one-line reason.

``tensorrt``, ``pycuda`` and ``torch`` are imported lazily, only when an engine is built or run,
so this package imports and its pure helpers run on machines without them, and an engine can be
built and timed on a board that has TensorRT and pycuda but no PyTorch. Device buffers come from
torch CUDA tensors where torch with CUDA is installed, else from pycuda.

Modules, in dependency order:

- ``availability``: is TensorRT usable here; the lazy import, version checks, logger, enum/dtype names
- ``shapes``: batch ranges, input shapes, optimization-profile shapes (no TensorRT)
- ``caches``: timing-cache and calibration-cache files
- ``calibration``: INT8 calibration batches, cache handling and TensorRT's calibrator
- ``cuda``: CUDA buffers, streams and events from torch or pycuda
- ``builder``: :func:`build_engine` and its argument checks
- ``bindings``: an engine's I/O tensors and their host/device buffers
- ``timing``: trtexec-style timing and LatencyStats from the event times
- ``runner``: :class:`TrtRunner` and :func:`compare_with_onnxruntime`

Everything that does not need TensorRT is a plain function or class, tested without a GPU. The
names below are re-exported; a test that replaces one (``_import_trt``, ``make_backend``, ...) must
do so in each module that imports it, as ``tests/test_tensorrt.py``'s ``patch_trt`` does.
"""
from exporters.tensorrt.availability import (
    NOT_INSTALLED,
    check_trt_version,
    cuda_backend_probe,
    enum_name,
    numpy_dtype,
    parse_version,
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
from exporters.tensorrt.caches import (
    default_calibration_cache,
    read_timing_cache,
    resolve_timing_cache,
    write_bytes_atomic,
)
from exporters.tensorrt.calibration import DEFAULT_CALIBRATION_BATCH, CalibrationBatches, CalibratorCore
from exporters.tensorrt.cuda import DeviceBuffer, HostBuffer, PyCuda, TorchCuda, make_backend
from exporters.tensorrt.runner import ENGINE_SUFFIXES, TrtRunner, compare_with_onnxruntime
from exporters.tensorrt.shapes import parse_batch_range, parse_sample_shape, profile_shapes, resolve_input_shape
from exporters.tensorrt.timing import assemble_stats, time_engine

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_CALIBRATION_BATCH",
    "ENGINE_SUFFIXES",
    "NOT_INSTALLED",
    "PRECISIONS",
    "Binding",
    "BuildArgs",
    "CalibrationBatches",
    "CalibratorCore",
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
    "default_calibration_cache",
    "describe_io",
    "enum_name",
    "format_parser_error",
    "make_backend",
    "numpy_dtype",
    "parse_batch_range",
    "parse_sample_shape",
    "parse_version",
    "profile_shapes",
    "random_feed",
    "read_timing_cache",
    "resolve_input_shape",
    "resolve_timing_cache",
    "severity_level",
    "tensorrt_available",
    "time_engine",
    "validate_build_args",
    "write_bytes_atomic",
]

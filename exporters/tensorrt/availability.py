"""Is TensorRT usable here, and the small helpers every module needs around the ``tensorrt`` module.

Version checks, the check that the TensorRT in hand has every name this package calls
(:data:`API`), the CUDA buffer backend probe, the lazy ``tensorrt`` import, the TensorRT logger
that forwards to Python logging, the Builder/Runtime constructors that turn TensorRT's no-GPU
``TypeError`` into one line, and TensorRT enum/dtype names. Nothing here imports ``tensorrt``,
``pycuda`` or ``torch`` at import time.

Building needs TensorRT 10 or newer (strongly typed networks, explicit batch only); running an
engine needs 8.5 or newer (the named-tensor API). The names in :data:`API` were checked against
the real bindings of 10.3.0, 10.13, 10.16 and 11.4 (tests/data/tensorrt-api); a TensorRT that
lacks one is refused up front, naming what it lacks, instead of failing halfway with an
AttributeError.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import re
from typing import Any

import numpy as np

from compress_base.errors import CompressError, first_line

log = logging.getLogger(__name__)

MIN_TRT = {"build": (10, 0), "run": (8, 5)}  # strongly typed builds; named-tensor runtime API
SUPPORTED = "TensorRT 10.3 to 11.x"
NOT_INSTALLED = (
    "TensorRT is not installed: install tensorrt (pip install tensorrt) on the machine with the NVIDIA GPU "
    "and build the engine there"
)

# Every ``tensorrt`` name this package touches, as "Owner.attribute" (Owner is a module-level
# class or enum; "" for the module itself), by what needs it. Running an engine (and its
# inspector) needs "run"; building needs both.
API = {
    "run": (
        ".Runtime", ".ILogger", ".init_libnvinfer_plugins", "ILogger.log",
        "LayerInformationFormat.JSON",
        "Runtime.deserialize_cuda_engine",
        "ICudaEngine.num_io_tensors", "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode",
        "ICudaEngine.get_tensor_shape", "ICudaEngine.get_tensor_dtype", "ICudaEngine.get_tensor_profile_shape",
        "ICudaEngine.create_execution_context", "ICudaEngine.create_engine_inspector",
        "ICudaEngine.profiling_verbosity",
        "IExecutionContext.set_input_shape", "IExecutionContext.get_tensor_shape",
        "IExecutionContext.set_tensor_address", "IExecutionContext.execute_async_v3",
        "EngineInspector.execution_context", "EngineInspector.get_engine_information",
    ),
    "build": (
        ".Builder", ".OnnxParser",
        "NetworkDefinitionCreationFlag.STRONGLY_TYPED", "MemoryPoolType.WORKSPACE", "BuilderFlag.TF32",
        "ProfilingVerbosity.DETAILED",
        "Builder.create_network", "Builder.create_builder_config", "Builder.create_optimization_profile",
        "Builder.build_serialized_network",
        "IBuilderConfig.set_memory_pool_limit", "IBuilderConfig.clear_flag", "IBuilderConfig.profiling_verbosity",
        "IBuilderConfig.add_optimization_profile", "IBuilderConfig.create_timing_cache",
        "IBuilderConfig.set_timing_cache", "IBuilderConfig.get_timing_cache", "ITimingCache.serialize",
        "INetworkDefinition.num_inputs", "INetworkDefinition.get_input",
        "ITensor.name", "ITensor.shape", "ITensor.dtype", "IOptimizationProfile.set_shape",
        "OnnxParser.parse_from_file", "OnnxParser.num_errors", "OnnxParser.get_error",
        "ParserError.desc", "ParserError.node", "ParserError.node_name", "ParserError.node_operator",
    ),
}


def api_names(purpose: str) -> tuple[str, ...]:
    """The names of :data:`API` that ``purpose`` ("run" or "build") needs."""
    return API["run"] + (API["build"] if purpose == "build" else ())


def missing_api(trt, purpose: str) -> list[str]:
    """The names of :data:`API` for ``purpose`` that the module ``trt`` lacks (``[]``: all there)."""
    missing = []
    for name in api_names(purpose):
        owner, attr = name.split(".")
        holder = getattr(trt, owner, None) if owner else trt
        if holder is None:
            missing.append(owner)
        elif not hasattr(holder, attr):
            missing.append(name.lstrip("."))
    return list(dict.fromkeys(missing))


# TensorRT DataType names -> numpy dtypes. BF16, FP8, INT4 and FP4 have no numpy dtype.
_TRT_TO_NUMPY = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}
_SEVERITY = {
    "INTERNAL_ERROR": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "INFO": logging.DEBUG,  # TensorRT's INFO is a chatty build trace
    "VERBOSE": logging.DEBUG,
}


def parse_version(text: str) -> tuple[int, ...]:
    """``"10.3.0.26"`` -> ``(10, 3, 0, 26)``; leading numeric fields only, ``()`` if none."""
    parts = []
    for piece in str(text).split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def check_trt_version(version: str, purpose: str = "build") -> tuple[bool, str]:
    """Whether this package can drive TensorRT ``version`` for ``purpose`` ("build" or "run"), and why not."""
    v = parse_version(version)
    if v[:2] >= MIN_TRT[purpose]:
        return True, f"TensorRT {version}"
    need = ".".join(map(str, MIN_TRT[purpose]))
    if purpose == "build":
        return False, (
            f"TensorRT {version} is too old to build engines: need {need} or newer (strongly typed "
            f"networks from an explicit-precision ONNX); install {SUPPORTED}, or build with trtexec there"
        )
    return False, (
        f"TensorRT {version} is too old: need {need} or newer (named-tensor API); on a Jetson Nano "
        "(JetPack 4.6, TensorRT 8.2) build and time engines with trtexec, or bench the ONNX file "
        "with onnxruntime"
    )


@functools.lru_cache(maxsize=1)
def cuda_backend_probe() -> tuple[str | None, str]:
    """The CUDA buffer backend usable here (``"torch"`` or ``"pycuda"``, else None) and why."""
    reasons = []
    if importlib.util.find_spec("torch") is not None:
        try:
            import torch

            if torch.cuda.is_available():
                return "torch", f"torch {torch.__version__} with CUDA {torch.version.cuda}"
            reasons.append("torch finds no CUDA device")
        except Exception as exc:  # a broken install is a reason, not a crash
            reasons.append(f"torch fails to import ({first_line(exc)})")
    if importlib.util.find_spec("pycuda") is not None:
        try:
            import pycuda.driver as cuda

            cuda.init()
            if cuda.Device.count() > 0:
                return "pycuda", "pycuda"
            reasons.append("pycuda finds no CUDA device")
        except Exception as exc:
            reasons.append(f"pycuda cannot initialise CUDA ({first_line(exc)})")
    if not reasons:
        reasons.append("neither torch nor pycuda is installed")
    return None, "; ".join(reasons)


def no_cuda_device(why: str) -> str:
    """The message for a machine where :func:`cuda_backend_probe` found no backend (``why``)."""
    return f"no CUDA device is usable ({why}); install pycuda or torch with CUDA on a machine with an NVIDIA GPU"


def tensorrt_available() -> tuple[bool, str]:
    """``(True, description)`` when engines can be built and run here, else ``(False, reason)``.

    Needs ``tensorrt`` >= 10 with every name of :data:`API` importable and a CUDA device reachable
    through torch or pycuda.
    """
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        return False, NOT_INSTALLED
    except OSError as exc:  # the wheel is there but libnvinfer is not
        return False, (
            f"TensorRT is installed but its libraries do not load ({first_line(exc)}); "
            "check LD_LIBRARY_PATH or reinstall tensorrt"
        )
    try:
        _check(trt, "build")
    except CompressError as exc:
        return False, str(exc)
    version = getattr(trt, "__version__", "unknown")
    backend, why = cuda_backend_probe()
    if backend is None:
        return False, f"TensorRT {version} is installed but {no_cuda_device(why)}"
    return True, f"TensorRT {version}, CUDA buffers through {why}"


def _check(trt, purpose: str) -> None:
    """A CompressError unless ``trt`` is recent enough for ``purpose`` and has every name it needs."""
    version = getattr(trt, "__version__", "unknown")
    ok, reason = check_trt_version(version, purpose)
    if not ok:
        raise CompressError(reason)
    missing = missing_api(trt, purpose)
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise CompressError(
            f"TensorRT {version} lacks {shown}, which {'building' if purpose == 'build' else 'running'} an "
            f"engine needs; install {SUPPORTED} (pip install 'tensorrt>=10.3,<12'; JetPack 6 has 10.3)"
        )


def _import_trt(missing: str = NOT_INSTALLED, purpose: str = "build"):
    """The ``tensorrt`` module, checked for ``purpose`` ("build" or "run"); a CompressError
    (``missing``, the version's or the missing names') otherwise."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        raise CompressError(missing) from None
    _check(trt, purpose)
    return trt


def require_tensorrt(purpose: str = "build"):
    """The ``tensorrt`` module, usable for ``purpose``; one CompressError line where it is missing,
    too old or lacks a name this package calls (check it first: it is the first thing to fix)."""
    return _import_trt(NOT_INSTALLED, purpose)


def create(trt, what: str, logger):
    """``trt.Builder(logger)`` or ``trt.Runtime(logger)`` (``what``), one CompressError line where
    TensorRT cannot start: without a usable GPU and driver its constructor returns nothing, which
    pybind11 raises as ``TypeError: pybind11::init(): factory function returned nullptr``."""
    try:
        return getattr(trt, what)(logger)
    except TypeError as exc:
        version = getattr(trt, "__version__", "unknown")
        raise CompressError(
            f"TensorRT {version} cannot create its {what} ({_last_error(logger, first_line(exc))}): no usable "
            "NVIDIA GPU and driver here; run it on the machine with the GPU, with a driver that this "
            "TensorRT supports (nvidia-smi shows it)"
        ) from None


def enum_name(value) -> str:
    """Name of a TensorRT (pybind11) enum member: ``DataType.HALF`` -> ``"HALF"``."""
    name = getattr(value, "name", None)
    if isinstance(name, str):
        return name
    return str(value).rsplit(".", 1)[-1]


def numpy_dtype(trt_dtype) -> np.dtype:
    """numpy dtype of a TensorRT DataType (or its name); a CompressError for types numpy lacks."""
    name = trt_dtype if isinstance(trt_dtype, str) else enum_name(trt_dtype)
    if name not in _TRT_TO_NUMPY:
        raise CompressError(
            f"engine tensor type {name} has no numpy equivalent; export the model with float32 "
            "inputs and outputs"
        )
    return np.dtype(_TRT_TO_NUMPY[name])


def severity_level(name: str) -> int:
    """Python logging level for a TensorRT logger severity name."""
    return _SEVERITY.get(name, logging.INFO)


# --------------------------------------------------------------------------------------------
# The TensorRT logger
# --------------------------------------------------------------------------------------------

_LOGGERS: dict[int, Any] = {}


def _logger(trt):
    """One TensorRT logger per process that forwards to Python logging and keeps the errors (every
    TensorRT failure ends in a CompressError that quotes the last one, so they are logged at DEBUG)."""
    if id(trt) not in _LOGGERS:
        logger = _LOGGERS[id(trt)] = _make_logger(trt)
        init_plugins = getattr(trt, "init_libnvinfer_plugins", None)
        if init_plugins is not None:  # plugin layers (e.g. from some ONNX ops) build and load
            init_plugins(logger, "")
    return _LOGGERS[id(trt)]


def _make_logger(trt):
    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            level = severity_level(enum_name(severity))
            if level >= logging.ERROR:  # kept for the one CompressError line that quotes it, not printed twice
                self.errors.append(str(msg))
                level = logging.DEBUG
            log.log(level, "TensorRT: %s", msg)

    return _Logger()


def _last_error(logger, default: str) -> str:
    """First line of the last error TensorRT logged (``default`` when it logged none)."""
    return first_line(logger.errors[-1] if logger.errors else default)

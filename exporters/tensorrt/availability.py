"""Is TensorRT usable here, and the small helpers every module needs around the ``tensorrt`` module.

Version checks, the CUDA buffer backend probe, the lazy ``tensorrt`` import, the TensorRT logger
that forwards to Python logging, and TensorRT enum/dtype names. Nothing here imports
``tensorrt``, ``pycuda`` or ``torch`` at import time.
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

MIN_TRT = (8, 5)  # named-tensor API: set_input_shape, set_tensor_address, execute_async_v3
NOT_INSTALLED = (
    "TensorRT is not installed: install tensorrt (pip install tensorrt) on the machine with the NVIDIA GPU "
    "and build the engine there"
)

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


def check_trt_version(version: str) -> tuple[bool, str]:
    """Whether this package can drive TensorRT ``version``, and why not."""
    v = parse_version(version)
    if v[:2] >= MIN_TRT:
        return True, f"TensorRT {version}"
    need = ".".join(map(str, MIN_TRT))
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

    Needs ``tensorrt`` >= 8.5 importable and a CUDA device reachable through torch or pycuda.
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
    version = getattr(trt, "__version__", "unknown")
    ok, reason = check_trt_version(version)
    if not ok:
        return False, reason
    backend, why = cuda_backend_probe()
    if backend is None:
        return False, f"TensorRT {version} is installed but {no_cuda_device(why)}"
    return True, f"TensorRT {version}, CUDA buffers through {why}"


def _import_trt(missing: str = NOT_INSTALLED):
    """The ``tensorrt`` module; a CompressError (``missing``, or the version check's) without it."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        raise CompressError(missing) from None
    ok, reason = check_trt_version(getattr(trt, "__version__", "unknown"))
    if not ok:
        raise CompressError(reason)
    return trt


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
    """One TensorRT logger per process that forwards to Python logging and keeps the errors."""
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
            if level >= logging.ERROR:
                self.errors.append(str(msg))
            log.log(level, "TensorRT: %s", msg)

    return _Logger()


def _last_error(logger, default: str) -> str:
    """First line of the last error TensorRT logged (``default`` when it logged none)."""
    return first_line(logger.errors[-1] if logger.errors else default)

"""TensorRT: build a serialized engine from an ONNX file, and time an engine the way trtexec does.

Written against the TensorRT 10 Python API; it also runs on TensorRT 8.5 and 8.6, the first
releases with the named-tensor API it relies on (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``). Older releases (8.2 on the original Jetson Nano) are refused with a
one-line reason.

``tensorrt``, ``pycuda`` and ``torch`` are imported lazily, only when an engine is built or run,
so this module imports and its pure helpers run on machines without them, and an engine can be
built and timed on a board that has TensorRT and pycuda but no PyTorch. Device buffers come from
torch CUDA tensors where torch with CUDA is installed, else from pycuda.

Timing follows trtexec: untimed warm-up runs, then per timed run CUDA events on one stream around
the host-to-device copies, ``execute_async_v3`` (the GPU compute time) and the device-to-host
copies. The latency of a run is host-to-device + compute + device-to-host (trtexec's "Latency");
the main statistics are of that end-to-end latency and the compute-only figures go into
``LatencyStats.settings``.

Everything that does not need TensorRT (argument validation, optimization-profile shapes, dtype
mapping, calibration batching and cache handling, timing-cache paths, statistics assembly from
event times) is a plain function or class here, tested without a GPU.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from compressor.errors import CompressError
from compressor.fileio import atomic_path
from exporters.stats import LatencyStats

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
MIN_TRT = (8, 5)  # named-tensor API: set_input_shape, set_tensor_address, execute_async_v3
DEFAULT_BATCH = (1, 1, 8)
DEFAULT_CALIBRATION_BATCH = 8
NOT_INSTALLED = (
    "TensorRT is not installed: install tensorrt (pip install tensorrt) on the machine with the NVIDIA GPU and build the engine there"
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


# --------------------------------------------------------------------------------------------
# Availability and versions
# --------------------------------------------------------------------------------------------


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
    """Whether this module can drive TensorRT ``version``, and why not."""
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
            reasons.append(f"torch fails to import ({_first_line(exc)})")
    if importlib.util.find_spec("pycuda") is not None:
        try:
            import pycuda.driver as cuda

            cuda.init()
            if cuda.Device.count() > 0:
                return "pycuda", "pycuda"
            reasons.append("pycuda finds no CUDA device")
        except Exception as exc:
            reasons.append(f"pycuda cannot initialise CUDA ({_first_line(exc)})")
    if not reasons:
        reasons.append("neither torch nor pycuda is installed")
    return None, "; ".join(reasons)


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
            f"TensorRT is installed but its libraries do not load ({_first_line(exc)}); "
            "check LD_LIBRARY_PATH or reinstall tensorrt"
        )
    version = getattr(trt, "__version__", "unknown")
    ok, reason = check_trt_version(version)
    if not ok:
        return False, reason
    backend, why = cuda_backend_probe()
    if backend is None:
        return False, (
            f"TensorRT {version} is installed but no CUDA device is usable ({why}); install pycuda "
            "or torch with CUDA on a machine with an NVIDIA GPU"
        )
    return True, f"TensorRT {version}, CUDA buffers through {why}"


def _import_trt(missing: str = NOT_INSTALLED):
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
# Argument validation and shapes
# --------------------------------------------------------------------------------------------


def parse_batch_range(batch) -> tuple[int, int, int]:
    """``(min, opt, max)`` batch sizes from an int (fixed), a 3-sequence, or ``"1,4,8"``."""
    value = batch
    if isinstance(value, str):
        try:
            value = [int(p) for p in re.split(r"[,:]", value.strip())]
        except ValueError:
            value = None
        if value is not None and len(value) == 1:
            value = value[0]
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value, value)
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )
    if not ok or not 1 <= value[0] <= value[1] <= value[2]:
        raise CompressError(
            f"batch range {batch!r} is not MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX; e.g. 1,1,8 "
            "(or one number for a fixed batch)"
        )
    return tuple(value)


def parse_sample_shape(input_shape) -> tuple[int, ...] | None:
    """An input shape without the batch axis, e.g. ``(3, 224, 224)``; None stays None."""
    if input_shape is None:
        return None
    try:
        dims = tuple(int(d) for d in input_shape)
        bad = any(isinstance(d, bool) for d in input_shape)
    except (TypeError, ValueError):
        dims, bad = (), True
    if bad or not dims or min(dims) < 1:
        raise CompressError(
            f"input shape {input_shape!r} is not a list of positive integers; give it without the "
            "batch dimension, e.g. (3, 224, 224)"
        )
    return dims


def _fmt(shape: Sequence[int]) -> str:
    return "x".join("?" if d < 0 else str(d) for d in shape)


def profile_shapes(
    name: str,
    dims: Sequence[int],
    batch: tuple[int, int, int],
    input_shape: Sequence[int] | None,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """Optimization-profile ``(min, opt, max)`` shapes of one network input, None if all static.

    ``dims`` is the input's shape in the parsed network, -1 for a dynamic axis; axis 0 is the
    batch axis and takes the ``batch`` range; other dynamic axes take ``input_shape`` (which must
    agree with the static ones).
    """
    dims = tuple(int(d) for d in dims)
    if not dims:
        raise CompressError(f"network input '{name}' is a scalar; TensorRT needs a batched tensor input")
    sample = tuple(dims[1:])
    if input_shape is not None:
        if len(input_shape) != len(sample):
            raise CompressError(
                f"network input '{name}' has shape {_fmt(dims)} but input_shape {_fmt(input_shape)} "
                f"has {len(input_shape)} dimensions; give {len(sample)} dimensions without the batch"
            )
        for d, want in zip(sample, input_shape):
            if d >= 0 and d != want:
                raise CompressError(
                    f"network input '{name}' takes {_fmt(sample)} but input_shape is "
                    f"{_fmt(input_shape)}; pass a matching input shape or re-export the model at it"
                )
        sample = tuple(input_shape)
    elif any(d < 0 for d in sample):
        raise CompressError(
            f"network input '{name}' has dynamic dimensions ({_fmt(dims)}); pass input_shape "
            "(e.g. 3x224x224) to fix them"
        )
    if dims[0] >= 0:
        if batch != (dims[0],) * 3:
            log.info("input '%s' has a fixed batch of %d; the batch range %s is ignored", name, dims[0], batch)
        if all(d >= 0 for d in dims):
            return None
        fixed = (dims[0], *sample)
        return fixed, fixed, fixed
    lo, opt, hi = batch
    return (lo, *sample), (opt, *sample), (hi, *sample)


def resolve_input_shape(
    name: str,
    dims: Sequence[int],
    profile_range: Sequence[Sequence[int]] | None,
    batch: int,
    input_shape: Sequence[int] | None = None,
    default_shape: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """The concrete shape an engine input gets at ``batch``, checked against its profile range.

    Static dimensions of the engine win; ``input_shape`` must agree with them, ``default_shape``
    (e.g. a profile's shape) only fills dynamic ones.
    """
    dims = tuple(int(d) for d in dims)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise CompressError(f"batch {batch!r} must be a positive integer, e.g. 1")
    sample = list(dims[1:])
    for given, strict in ((input_shape, True), (default_shape, False)):
        if given is None:
            continue
        given = tuple(int(d) for d in given)
        if len(given) != len(sample):
            if strict:
                raise CompressError(
                    f"engine input '{name}' has shape {_fmt(dims)}; give an input shape of "
                    f"{len(sample)} dimensions, not {_fmt(given)}"
                )
            continue
        for i, (d, g) in enumerate(zip(dims[1:], given)):
            if d >= 0 and d != g and strict:
                raise CompressError(
                    f"engine input '{name}' takes {_fmt(dims[1:])}, not {_fmt(given)}; drop the input "
                    "shape or rebuild the engine at that shape"
                )
            if sample[i] < 0:
                sample[i] = g
    if dims[0] >= 0 and dims[0] != batch:
        raise CompressError(
            f"engine input '{name}' has a fixed batch of {dims[0]}, not {batch}; use batch {dims[0]} "
            "or rebuild the engine with a batch range"
        )
    if any(d < 0 for d in sample):
        raise CompressError(
            f"engine input '{name}' has dynamic dimensions ({_fmt(dims)}); give an input shape, "
            "e.g. 3x224x224"
        )
    shape = (batch, *sample)
    if profile_range is not None:
        lo, hi = tuple(profile_range[0]), tuple(profile_range[-1])
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            raise CompressError(
                f"shape {_fmt(shape)} of engine input '{name}' is outside the engine's profile "
                f"{_fmt(lo)} .. {_fmt(hi)}; use a batch/shape in that range or rebuild the engine"
            )
    return shape


@dataclass(frozen=True)
class BuildArgs:
    """Validated arguments of :func:`build_engine`."""

    onnx_path: Path
    engine_path: Path
    precision: str
    batch: tuple[int, int, int]
    input_shape: tuple[int, ...] | None
    workspace_bytes: int
    timing_cache: Path | None
    calibration_cache: Path | None
    calibration_batch_size: int


def default_calibration_cache(engine_path: str | os.PathLike) -> Path:
    """Where an INT8 calibration cache goes when none is named: next to the engine."""
    return Path(engine_path).with_suffix(".calib")


def validate_build_args(
    onnx_path,
    engine_path,
    precision: str = "fp16",
    batch=DEFAULT_BATCH,
    input_shape=None,
    workspace_mb: int = 1024,
    timing_cache=None,
    calibration_batches=None,
    calibration_cache=None,
    calibration_batch_size: int = DEFAULT_CALIBRATION_BATCH,
) -> BuildArgs:
    """Check every :func:`build_engine` argument; each problem is a one-line CompressError."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise CompressError(f"ONNX file {onnx_path} does not exist; export the model first")
    engine_path = Path(engine_path)
    if engine_path.resolve() == onnx_path.resolve():
        raise CompressError(f"engine path {engine_path} is the ONNX file itself; write the engine to a .engine file")
    if engine_path.is_dir():
        raise CompressError(f"engine path {engine_path} is a directory; give a file name such as model.engine")
    if precision not in PRECISIONS:
        raise CompressError(f"precision {precision!r} is not supported: choose one of {', '.join(PRECISIONS)}")
    batch = parse_batch_range(batch)
    shape = parse_sample_shape(input_shape)
    if isinstance(workspace_mb, bool) or not isinstance(workspace_mb, int) or workspace_mb < 1:
        raise CompressError(f"workspace {workspace_mb!r} must be a positive number of MiB, e.g. 1024")
    cache = resolve_timing_cache(timing_cache)
    cbs = calibration_batch_size
    if isinstance(cbs, bool) or not isinstance(cbs, int) or cbs < 1:
        raise CompressError(f"calibration batch size {calibration_batch_size!r} must be a positive integer")
    calib = None
    if precision == "int8":
        calib = Path(calibration_cache) if calibration_cache is not None else default_calibration_cache(engine_path)
        if calib.is_dir():
            raise CompressError(f"calibration cache {calib} is a directory; give a file name such as model.calib")
        if calibration_batches is None and not calib.is_file():
            raise CompressError(
                "INT8 needs calibration data: pass calibration images (--calib-data DIR) or an "
                f"existing calibration cache (no file at {calib}), or build with --precision fp16"
            )
    elif calibration_batches is not None:
        log.warning("calibration data is only used for INT8; precision %s ignores it", precision)
    return BuildArgs(
        onnx_path=onnx_path,
        engine_path=engine_path,
        precision=precision,
        batch=batch,
        input_shape=shape,
        workspace_bytes=workspace_mb * 2**20,
        timing_cache=cache,
        calibration_cache=calib,
        calibration_batch_size=calibration_batch_size,
    )


# --------------------------------------------------------------------------------------------
# Timing cache
# --------------------------------------------------------------------------------------------


def resolve_timing_cache(path) -> Path | None:
    """A timing-cache file path (None: no cache); a directory is a user error."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise CompressError(f"timing cache {path} is a directory; give a file name such as trt.cache")
    return path


def read_timing_cache(path: Path | None) -> bytes:
    """The cache's bytes, or ``b""`` (a fresh cache) when there is no file yet."""
    if path is None or not path.is_file():
        return b""
    return path.read_bytes()


def write_bytes_atomic(path: Path, data) -> Path:
    """Write a bytes-like object (``IHostMemory`` included) to ``path`` through a temporary name."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(memoryview(data))
    return Path(path)


# --------------------------------------------------------------------------------------------
# INT8 calibration data
# --------------------------------------------------------------------------------------------


def _as_array(item) -> np.ndarray:
    if isinstance(item, (tuple, list)) and item and not isinstance(item[0], (int, float)):
        item = item[0]  # (images, labels) from a DataLoader
    if hasattr(item, "detach"):  # a torch tensor, wherever it lives
        item = item.detach().cpu().numpy()
    return np.asarray(item)


class CalibrationBatches:
    """Re-batch calibration data into fixed ``(batch_size, *sample_shape)`` float32 arrays.

    ``source`` yields numpy arrays (or torch tensors, or ``(images, labels)`` pairs) holding one
    sample ``sample_shape`` or a stack of them ``(n, *sample_shape)``. Samples are packed in order;
    the last incomplete batch is dropped. ``max_batches`` stops early. Counts of samples seen,
    batches given and samples dropped are kept for the log.
    """

    def __init__(
        self,
        source: Iterable,
        batch_size: int,
        sample_shape: Sequence[int],
        max_batches: int | None = None,
        dtype=np.float32,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise CompressError(f"calibration batch size {batch_size!r} must be a positive integer")
        if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
            raise CompressError(f"max calibration batches {max_batches!r} must be a positive integer")
        self.source = source
        self.batch_size = batch_size
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.max_batches = max_batches
        self.dtype = np.dtype(dtype)
        self.samples = 0
        self.batches = 0
        self.dropped = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        pending: list[np.ndarray] = []
        have = 0
        for item in self.source:
            x = _as_array(item)
            if x.shape == self.sample_shape:
                x = x[None]
            if x.ndim != len(self.sample_shape) + 1 or x.shape[1:] != self.sample_shape:
                raise CompressError(
                    f"calibration data of shape {_fmt(x.shape)} does not fit the network input "
                    f"N x {_fmt(self.sample_shape)}; resize calibration images to "
                    f"{_fmt(self.sample_shape[1:]) if len(self.sample_shape) > 1 else _fmt(self.sample_shape)}"
                )
            if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
                raise CompressError(f"calibration data has dtype {x.dtype}; give numeric arrays")
            x = x.astype(self.dtype, copy=False)
            if not np.isfinite(x).all():
                raise CompressError("calibration data holds NaN or infinite values; check the preprocessing")
            self.samples += len(x)
            pending.append(x)
            have += len(x)
            while have >= self.batch_size:
                flat = np.concatenate(pending) if len(pending) > 1 else pending[0]
                yield np.ascontiguousarray(flat[: self.batch_size])
                self.batches += 1
                rest = flat[self.batch_size :]
                pending, have = ([rest] if len(rest) else []), len(rest)
                if self.max_batches is not None and self.batches >= self.max_batches:
                    self.dropped = have
                    return
        self.dropped = have


class CalibratorCore:
    """The TensorRT-independent half of the INT8 calibrator: batches, cache file, errors.

    With calibration data the cache file is not read (a stale cache from another model at the
    same path would give wrong scales) but rewritten after calibration; without data the cache
    is the only source. ``next_batch`` never raises (TensorRT calls it from C++): an exception is
    kept in ``error`` and ends calibration; :meth:`check` raises it after the build.
    """

    def __init__(self, batches: Iterable[np.ndarray] | None, cache_path: Path, batch_size: int):
        self.cache_path = Path(cache_path)
        self.batch_size = batch_size
        self._iter = iter(batches) if batches is not None else iter(())
        self._source = batches
        self.error: BaseException | None = None
        self.given = 0
        self.cache_read = False
        self.cache_written = False

    def next_batch(self) -> np.ndarray | None:
        if self.error is not None:
            return None
        try:
            x = next(self._iter)
        except StopIteration:
            return None
        except BaseException as exc:  # noqa: BLE001 - reported by check() after the build
            self.error = exc
            return None
        self.given += 1
        return x

    def read_cache(self) -> bytes | None:
        if self._source is not None:
            if self.cache_path.is_file():
                log.info("calibrating from the given data; %s will be overwritten", self.cache_path)
            return None
        if self.cache_path.is_file():
            data = self.cache_path.read_bytes()
            if data:
                self.cache_read = True
                log.info("using INT8 calibration cache %s", self.cache_path)
                return data
        return None

    def write_cache(self, data) -> None:
        write_bytes_atomic(self.cache_path, data)
        self.cache_written = True
        log.info("wrote INT8 calibration cache %s", self.cache_path)

    def check(self) -> None:
        """Raise what went wrong while TensorRT pulled calibration batches, if anything."""
        if self.error is not None:
            if isinstance(self.error, CompressError):
                raise self.error
            raise CompressError(
                f"reading calibration data failed: {_first_line(self.error)}; check the calibration images"
            ) from self.error
        if not self.cache_read and self.given == 0:
            src = self._source
            seen = getattr(src, "samples", None)
            detail = f" ({seen} images)" if seen is not None else ""
            raise CompressError(
                f"calibration data gave no full batch of {self.batch_size}{detail}; give more "
                "calibration images or a smaller calibration batch"
            )


# --------------------------------------------------------------------------------------------
# Statistics from event times
# --------------------------------------------------------------------------------------------


def summarize_ms(times_ms: Sequence[float]) -> dict:
    """``{p50, p90, p99, mean}`` of times in ms (linear-interpolated percentiles, like LatencyStats)."""
    t = np.asarray(times_ms, dtype=float)
    if t.ndim != 1 or t.size == 0 or t.min() < 0:
        raise ValueError(f"times_ms must be a non-empty list of non-negative times, got {times_ms!r}")
    p50, p90, p99 = (float(v) for v in np.percentile(t, [50, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99, "mean": float(t.mean())}


def assemble_stats(
    h2d_ms: Sequence[float],
    compute_ms: Sequence[float],
    d2h_ms: Sequence[float],
    *,
    enqueue_ms: Sequence[float] | None = None,
    batch: int,
    input_shape: Sequence[int],
    warmup: int,
    device: str,
    versions: dict,
    settings: dict | None = None,
    runtime: str = "tensorrt",
) -> LatencyStats:
    """LatencyStats of end-to-end latency (H2D + GPU compute + D2H per run), trtexec-style.

    The compute-only, copy and host-enqueue summaries go into ``settings`` as
    ``gpu_compute_ms``, ``h2d_ms``, ``d2h_ms`` and ``enqueue_ms``.
    """
    h2d, comp, d2h = (np.asarray(a, dtype=float) for a in (h2d_ms, compute_ms, d2h_ms))
    if not h2d.shape == comp.shape == d2h.shape or comp.ndim != 1:
        raise ValueError("h2d_ms, compute_ms and d2h_ms must be lists of the same length")
    e2e = h2d + comp + d2h
    extra = {
        "latency": "end-to-end per run: host-to-device copies + GPU compute + device-to-host copies, "
        "CUDA events on one stream (trtexec's Latency); throughput = batch / mean latency",
        "gpu_compute_ms": summarize_ms(comp),
        "h2d_ms": summarize_ms(h2d),
        "d2h_ms": summarize_ms(d2h),
    }
    if enqueue_ms is not None:
        extra["enqueue_ms"] = summarize_ms(enqueue_ms)
    return LatencyStats.from_times(
        list(e2e),
        batch=batch,
        input_shape=tuple(int(d) for d in input_shape),
        warmup=warmup,
        runtime=runtime,
        device=device,
        versions=dict(versions),
        threads=0,
        settings={**extra, **(settings or {})},
    )


# --------------------------------------------------------------------------------------------
# ONNX parser errors and the TensorRT logger
# --------------------------------------------------------------------------------------------


def format_parser_error(err) -> str:
    """One line for a TensorRT ``ParserError``: the node (name, operator) and the description."""
    def call(attr):
        fn = getattr(err, attr, None)
        try:
            return fn() if callable(fn) else None
        except Exception:  # older parsers lack some accessors
            return None

    desc = call("desc")
    if not desc:
        return _first_line(str(err)) or "unknown parser error"
    desc = _first_line(str(desc))
    where = []
    node = call("node")
    if isinstance(node, int) and node >= 0:
        where.append(f"node {node}")
    name = call("node_name")
    if name:
        where.append(f"'{name}'")
    op = call("node_operator")
    if op:
        where.append(f"({op})")
    return f"{' '.join(where)}: {desc}" if where else desc


def _first_line(exc_or_text) -> str:
    lines = str(exc_or_text).strip().splitlines()
    if lines:
        return lines[0]
    return type(exc_or_text).__name__ if isinstance(exc_or_text, BaseException) else ""


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


# --------------------------------------------------------------------------------------------
# CUDA buffers: torch or pycuda
# --------------------------------------------------------------------------------------------


@dataclass
class DeviceBuffer:
    ptr: int
    nbytes: int
    handle: Any = None


@dataclass
class HostBuffer:
    array: np.ndarray
    handle: Any = None


class TorchCuda:
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

    def record(self, event, stream) -> None:
        event.record(stream)

    def synchronize(self, event) -> None:
        event.synchronize()

    def elapsed_ms(self, start, end) -> float:
        return float(start.elapsed_time(end))

    def h2d(self, dev: DeviceBuffer, host: HostBuffer, stream) -> None:
        n = host.array.nbytes
        with self.torch.cuda.stream(stream):
            dev.handle[:n].copy_(host.handle[:n], non_blocking=True)

    def d2h(self, host: HostBuffer, dev: DeviceBuffer, stream) -> None:
        n = host.array.nbytes
        with self.torch.cuda.stream(stream):
            host.handle[:n].copy_(dev.handle[:n], non_blocking=True)

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


class PyCuda:
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

    def record(self, event, stream) -> None:
        event.record(stream)

    def synchronize(self, event) -> None:
        event.synchronize()

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
            raise CompressError(
                f"no CUDA device is usable ({why}); install pycuda or torch with CUDA on a machine "
                "with an NVIDIA GPU"
            )
    if backend == "torch":
        return TorchCuda(device)
    if backend == "pycuda":
        try:
            return PyCuda(device)
        except ImportError:
            raise CompressError("pycuda is not installed: pip install pycuda, or install torch with CUDA") from None
    raise CompressError(f"CUDA backend {backend!r} is not supported; use 'auto', 'torch' or 'pycuda'")


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _make_calibrator(trt, core: CalibratorCore, backend, nbytes: int):
    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.buffer = backend.device_buffer(nbytes) if core._source is not None else None

        def get_batch_size(self):
            return core.batch_size

        def get_batch(self, names):
            x = core.next_batch()
            if x is None or self.buffer is None:
                return None
            try:
                backend.copy_to_device(self.buffer, x)
            except BaseException as exc:  # noqa: BLE001 - surfaced by core.check()
                core.error = exc
                return None
            return [self.buffer.ptr]

        def read_calibration_cache(self):
            return core.read_cache()

        def write_calibration_cache(self, cache):
            try:
                core.write_cache(cache)
            except BaseException as exc:  # noqa: BLE001
                core.error = exc

    return _EntropyCalibrator()


def _explicit_batch_flags(trt) -> int:
    if parse_version(trt.__version__)[0] >= 10:
        return 0  # explicit batch is the only mode
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def build_engine(
    onnx_path,
    engine_path,
    precision: str = "fp16",
    batch=DEFAULT_BATCH,
    input_shape=None,
    workspace_mb: int = 1024,
    timing_cache=None,
    calibration_batches: Iterable | None = None,
    calibration_cache=None,
    calibration_batch_size: int = DEFAULT_CALIBRATION_BATCH,
    max_calibration_batches: int | None = None,
    backend="auto",
) -> dict:
    """Build a TensorRT engine from an ONNX file and write it atomically to ``engine_path``.

    ``batch`` is the ``(min, opt, max)`` range of the dynamic batch axis (one optimization
    profile; an int fixes it); ``input_shape`` (C, H, W) fills dynamic non-batch axes and must
    match static ones. ``workspace_mb`` caps the builder's scratch memory. ``timing_cache`` is a
    file read before and rewritten after the build (it makes rebuilds fast; it is specific to the
    GPU and TensorRT version).

    ``precision="fp32"`` also turns TensorFloat-32 off (TensorRT enables it by default on Ampere
    and newer); ``"fp16"`` allows FP16 kernels; ``"int8"`` enables INT8 (with FP16 fallback) and
    needs ``calibration_batches`` (arrays of ``(n, C, H, W)`` or ``(C, H, W)``, or ``(images,
    labels)`` pairs from a DataLoader, preprocessed like the model's inputs; re-batched to
    ``calibration_batch_size``, at most ``max_calibration_batches``) or an existing
    ``calibration_cache`` (default: the engine path with suffix ``.calib``), which is written
    after calibration and is what a later build without calibration data uses. ``backend`` picks the CUDA buffers that feed
    calibration (see :func:`make_backend`). Returns a JSON-able description of the build.
    """
    args = validate_build_args(
        onnx_path, engine_path, precision, batch, input_shape, workspace_mb, timing_cache,
        calibration_batches, calibration_cache, calibration_batch_size,
    )
    trt = _import_trt()
    logger = _logger(trt)
    logger.errors.clear()
    start = time.perf_counter()

    builder = trt.Builder(logger)
    network = builder.create_network(_explicit_batch_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(args.onnx_path)):
        n = parser.num_errors
        first = format_parser_error(parser.get_error(0)) if n else "no error reported"
        more = f" (and {n - 1} more)" if n > 1 else ""
        raise CompressError(
            f"TensorRT cannot parse {args.onnx_path.name}: {first}{more}; simplify or re-export the "
            "model (a lower opset, or replace the operation)"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, args.workspace_bytes)
    if args.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32, not TensorFloat-32 matmuls/convs
    if args.precision in ("fp16", "int8"):
        if not getattr(builder, "platform_has_fast_fp16", True):
            log.warning("this GPU has no fast FP16; the %s engine may be no faster than FP32", args.precision)
        config.set_flag(trt.BuilderFlag.FP16)
    if args.precision == "int8":
        if not getattr(builder, "platform_has_fast_int8", True):
            log.warning("this GPU has no fast INT8; the INT8 engine may be no faster than FP16")
        config.set_flag(trt.BuilderFlag.INT8)

    inputs = {}
    profile = builder.create_optimization_profile()
    dynamic = False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(tensor.shape)
        shapes = profile_shapes(tensor.name, dims, args.batch, args.input_shape)
        inputs[tensor.name] = {"network_shape": list(dims), "dtype": enum_name(tensor.dtype).lower()}
        if shapes is not None:
            dynamic = True
            profile.set_shape(tensor.name, *shapes)
            inputs[tensor.name]["profile"] = [list(s) for s in shapes]
        else:
            inputs[tensor.name]["profile"] = [list(dims)] * 3
    if dynamic:
        config.add_optimization_profile(profile)

    cache = None
    if args.timing_cache is not None:
        cache = config.create_timing_cache(read_timing_cache(args.timing_cache))
        if not config.set_timing_cache(cache, False):
            log.warning("timing cache %s was made by another GPU or TensorRT; starting a fresh one", args.timing_cache)
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)

    core = cuda = calibrator = None
    if args.precision == "int8":
        if network.num_inputs != 1:
            raise CompressError(
                f"INT8 calibration supports networks with one input, not {network.num_inputs}; "
                "build with --precision fp16"
            )
        name = network.get_input(0).name
        sample = tuple(inputs[name]["profile"][1][1:])
        batches = None
        if calibration_batches is not None:
            batches = CalibrationBatches(
                calibration_batches, args.calibration_batch_size, sample, max_calibration_batches
            )
        core = CalibratorCore(batches, args.calibration_cache, args.calibration_batch_size)
        cuda = make_backend(backend) if batches is not None else None
        nbytes = args.calibration_batch_size * int(np.prod(sample)) * 4
        calibrator = _make_calibrator(trt, core, cuda, nbytes)
        config.int8_calibrator = calibrator
        calib_shape = (args.calibration_batch_size, *sample)
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(name, calib_shape, calib_shape, calib_shape)
        config.set_calibration_profile(calib_profile)

    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.buffer = None  # free the device buffer while its CUDA context is current
        if cuda is not None:
            cuda.close()
    if core is not None:
        core.check()
    if serialized is None:
        reason = logger.errors[-1] if logger.errors else "see the TensorRT log"
        raise CompressError(
            f"TensorRT could not build an engine from {args.onnx_path.name}: {_first_line(reason)}; "
            "try a larger workspace, a smaller batch range or --precision fp32"
        )
    write_bytes_atomic(args.engine_path, serialized)
    if cache is not None:
        write_bytes_atomic(args.timing_cache, config.get_timing_cache().serialize())
    seconds = time.perf_counter() - start
    log.info(
        "built %s engine %s from %s in %.1f s", args.precision, args.engine_path, args.onnx_path.name, seconds
    )
    return {
        "engine": str(args.engine_path),
        "onnx": str(args.onnx_path),
        "precision": args.precision,
        "batch": list(args.batch),
        "inputs": inputs,
        "workspace_mb": args.workspace_bytes // 2**20,
        "timing_cache": str(args.timing_cache) if args.timing_cache else None,
        "calibration_cache": str(args.calibration_cache) if args.calibration_cache else None,
        "calibration": (
            {"batches": core.given, "from_cache": core.cache_read, "cache_written": core.cache_written}
            if core is not None else None
        ),
        "build_seconds": round(seconds, 3),
        "bytes": args.engine_path.stat().st_size,
        "tensorrt": trt.__version__,
    }


# --------------------------------------------------------------------------------------------
# Running and timing
# --------------------------------------------------------------------------------------------


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
            if not context.set_input_shape(spec.name, shapes[spec.name]):
                raise CompressError(
                    f"TensorRT rejects shape {_fmt(shapes[spec.name])} for input '{spec.name}'; use a "
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
                f"engine output '{spec.name}' has a data-dependent shape {_fmt(shape)}; this runner "
                "handles fixed-shape outputs only"
            )
        host = backend.host_buffer(shape, spec.dtype)
        dev = backend.device_buffer(host.array.nbytes)
        if not context.set_tensor_address(spec.name, dev.ptr):
            raise CompressError(f"TensorRT rejects the buffer of tensor '{spec.name}'")
        (inputs if spec.is_input else outputs).append(Binding(spec, shape, host, dev))
    return inputs, outputs


def time_engine(context, backend, inputs: list[Binding], outputs: list[Binding], warmup: int, runs: int) -> dict:
    """Run ``warmup`` untimed then ``runs`` timed inferences; per-run times in ms.

    Returns ``{"h2d": [...], "compute": [...], "d2h": [...], "enqueue": [...]}``: CUDA-event
    intervals on one stream (H2D copies | execute_async_v3 | D2H copies) and the host time of
    the ``execute_async_v3`` call. Outputs are left in the bindings' host buffers.
    """
    stream = backend.stream()
    handle = backend.stream_handle(stream)
    events = [backend.event() for _ in range(4)]
    times: dict[str, list[float]] = {"h2d": [], "compute": [], "d2h": [], "enqueue": []}

    def once(keep: bool) -> None:
        backend.record(events[0], stream)
        for b in inputs:
            backend.h2d(b.device, b.host, stream)
        backend.record(events[1], stream)
        t0 = time.perf_counter()
        ok = context.execute_async_v3(handle)
        enqueue = (time.perf_counter() - t0) * 1e3
        if not ok:
            raise CompressError(
                "TensorRT failed to run the engine (execute_async_v3 returned False); see the TensorRT log"
            )
        backend.record(events[2], stream)
        for b in outputs:
            backend.d2h(b.host, b.device, stream)
        backend.record(events[3], stream)
        backend.synchronize(events[3])
        if keep:
            times["h2d"].append(backend.elapsed_ms(events[0], events[1]))
            times["compute"].append(backend.elapsed_ms(events[1], events[2]))
            times["d2h"].append(backend.elapsed_ms(events[2], events[3]))
            times["enqueue"].append(enqueue)

    for _ in range(warmup):
        once(False)
    for _ in range(runs):
        once(True)
    return times


@dataclass
class _Session:
    path: Path
    engine: Any
    context: Any
    specs: list[TensorSpec] = field(default_factory=list)


class TrtRunner:
    """Times a TensorRT engine; same ``measure`` interface as :class:`exporters.runners.Runner`.

    ``measure(model, ...)`` takes an engine file (``.engine``/``.plan``/``.trt``; default: the
    ``engine_path`` given here), an ONNX file or an ``nn.Module`` (both built first into a
    temporary engine at ``precision``). ``backend`` picks the CUDA buffers: ``"auto"`` (torch if it
    has CUDA, else pycuda), ``"torch"`` or ``"pycuda"``. Use as a context manager or call
    :meth:`close` to release the CUDA context with pycuda.
    """

    runtime = "tensorrt"

    def __init__(self, engine_path=None, backend="auto", device: int = 0, precision: str = "fp16",
                 workspace_mb: int = 1024):
        self.engine_path = Path(engine_path) if engine_path is not None else None
        self._backend_arg = backend
        self.device = device
        self.precision = precision
        self.workspace_mb = workspace_mb
        self._trt = None
        self._backend = None
        self._runtime = None
        self._session: _Session | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    # -- setup -----------------------------------------------------------------------------

    def _setup(self):
        if self._trt is None:
            self._trt = _import_trt(
                "TensorRT is not installed: timing an engine needs tensorrt on the target "
                "(pip install tensorrt, or JetPack's python3-libnvinfer)"
            )
        if self._backend is None:
            self._backend = make_backend(self._backend_arg, self.device)
        return self._trt, self._backend

    def _engine_file(self, model, input_shape, batch: int = 1) -> Path:
        if model is None:
            if self.engine_path is None:
                raise CompressError("no engine given: pass an engine file to TrtRunner or to measure()")
            model = self.engine_path
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if not path.is_file():
                raise CompressError(f"engine file {path} does not exist; build it first with `compress engine MODEL.onnx`")
            if path.suffix.lower() == ".onnx":
                return self._build_temp(path, input_shape, batch)
            return path
        # an nn.Module: export to ONNX first (imports torch, which the caller already has)
        from exporters.onnx_export import export_onnx

        shape = parse_sample_shape(input_shape)
        if shape is None:
            raise CompressError("timing an nn.Module on TensorRT needs its input shape, e.g. (3, 224, 224)")
        tmp = self._tmpdir()
        onnx_path = export_onnx(model, shape, Path(tmp) / "model.onnx")
        return self._build_temp(onnx_path, shape, batch)

    def _tmpdir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="trt-runner-")
        return self._tmp.name

    def _build_temp(self, onnx_path: Path, input_shape, batch: int) -> Path:
        """A throw-away engine for one measurement, its profile fixed at ``batch``."""
        engine = Path(self._tmpdir()) / (onnx_path.stem + ".engine")
        self._drop_session()  # the same temporary path may now hold another model
        build_engine(onnx_path, engine, precision=self.precision, batch=batch, input_shape=input_shape,
                     workspace_mb=self.workspace_mb, backend=self._backend_arg)
        return engine

    def _drop_session(self) -> None:
        """Release context, then engine (the runtime that made them goes last, in close())."""
        if self._session is not None:
            self._session.context = None
            self._session.engine = None
            self._session = None

    def _open(self, path: Path) -> _Session:
        if self._session is not None and self._session.path == path:
            return self._session
        self._drop_session()
        trt, _ = self._setup()
        logger = _logger(trt)
        if self._runtime is None:
            self._runtime = trt.Runtime(logger)
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            reason = logger.errors[-1] if logger.errors else "not a TensorRT engine"
            raise CompressError(
                f"TensorRT {trt.__version__} cannot load {path.name}: {_first_line(reason)}; engines "
                "only load on the TensorRT version and GPU model that built them, so rebuild it here"
            )
        context = engine.create_execution_context()
        if context is None:
            raise CompressError(
                f"TensorRT cannot create an execution context for {path.name}; is the GPU out of memory?"
            )
        self._session = _Session(path, engine, context, describe_io(engine))
        return self._session

    def _shapes(self, session: _Session, batch, input_shape, default_shape) -> dict:
        inputs = [s for s in session.specs if s.is_input]
        if len(inputs) > 1 and input_shape is not None:
            log.warning("the engine has %d inputs; input_shape applies to the first", len(inputs))
        shapes = {}
        for i, spec in enumerate(inputs):
            shapes[spec.name] = resolve_input_shape(
                spec.name, spec.shape, spec.profile, batch,
                input_shape if i == 0 else None, default_shape if i == 0 else None,
            )
        return shapes

    # -- public ----------------------------------------------------------------------------

    def measure(self, model=None, input_shape=None, batch: int = 1, warmup: int = 10, runs: int = 50,
                default_shape=None, seed: int = 0) -> LatencyStats:
        """Run ``warmup`` untimed then ``runs`` timed inferences on seeded random inputs.

        The input shape comes from the engine where it is static; ``input_shape`` must agree with
        it, ``default_shape`` (e.g. the profile's) only fills dynamic axes.
        """
        if isinstance(warmup, bool) or isinstance(runs, bool) or not isinstance(warmup, int) \
                or not isinstance(runs, int) or warmup < 0 or runs < 1:
            raise CompressError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
        path = self._engine_file(model, input_shape, batch)
        session = self._open(path)
        trt, backend = self._setup()
        shapes = self._shapes(session, batch, parse_sample_shape(input_shape), default_shape)
        inputs, outputs = bind(session.engine, session.context, backend, shapes)
        for k, b in enumerate(inputs):
            b.host.array[...] = random_feed(b.shape, b.spec.dtype, seed + k)
        times = time_engine(session.context, backend, inputs, outputs, warmup, runs)
        first = inputs[0]
        stats = assemble_stats(
            times["h2d"], times["compute"], times["d2h"], enqueue_ms=times["enqueue"],
            batch=batch, input_shape=first.shape[1:], warmup=warmup,
            device=backend.device_name(),
            versions={"tensorrt": trt.__version__, **backend.versions()},
            settings={
                "engine": path.name,
                "buffers": backend.name,
                "pinned_host_memory": True,
                "io": [
                    {"name": b.spec.name, "mode": "input" if b.spec.is_input else "output",
                     "shape": list(b.shape), "dtype": b.spec.dtype.name}
                    for b in [*inputs, *outputs]
                ],
            },
        )
        log.info(
            "tensorrt: p50 %.3f ms end-to-end (GPU compute p50 %.3f ms), p99 %.3f ms at batch %d (%d runs)",
            stats.p50, stats.settings["gpu_compute_ms"]["p50"], stats.p99, batch, runs,
        )
        return stats

    def infer(self, inputs, model=None) -> dict[str, np.ndarray]:
        """Run the engine once on ``inputs`` (an array for a one-input engine, or name -> array)."""
        first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
        first = np.asarray(first)
        path = self._engine_file(model, first.shape[1:], int(first.shape[0]) if first.ndim else 1)
        session = self._open(path)
        _, backend = self._setup()
        names = [s.name for s in session.specs if s.is_input]
        if not isinstance(inputs, dict):
            if len(names) != 1:
                raise CompressError(f"the engine has inputs {names}; pass a dict of arrays by name")
            inputs = {names[0]: inputs}
        missing = set(names) - set(inputs)
        if missing:
            raise CompressError(f"missing engine inputs {sorted(missing)}; pass arrays for {names}")
        shapes = {}
        for spec in session.specs:
            if spec.is_input:
                arr = np.asarray(inputs[spec.name])
                shapes[spec.name] = resolve_input_shape(
                    spec.name, spec.shape, spec.profile, int(arr.shape[0]), arr.shape[1:]
                )
        ins, outs = bind(session.engine, session.context, backend, shapes)
        for b in ins:
            b.host.array[...] = np.asarray(inputs[b.spec.name]).astype(b.spec.dtype, copy=False)
        time_engine(session.context, backend, ins, outs, 0, 1)
        return {b.spec.name: np.array(b.host.array, copy=True) for b in outs}

    def close(self) -> None:
        self._drop_session()
        self._runtime = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "TrtRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def compare_with_onnxruntime(engine_path, onnx_path, batch: int = 2, input_shape=None, seed: int = 0,
                             backend="auto") -> dict:
    """Max absolute difference between the engine and onnxruntime (CPU) on one random batch.

    Returns ``{"max_abs_diff", "batch", "output"}`` for the first output.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    dims = [d if isinstance(d, int) else -1 for d in inp.shape]
    shape = resolve_input_shape(inp.name, dims, None, batch, parse_sample_shape(input_shape))
    x = random_feed(shape, np.float32, seed)
    want = session.run(None, {inp.name: x})[0]
    with TrtRunner(engine_path, backend=backend) as runner:
        got_all = runner.infer({inp.name: x})
    out_name = session.get_outputs()[0].name
    got = got_all.get(out_name, next(iter(got_all.values())))
    if got.shape != want.shape:
        raise CompressError(
            f"engine output shape {got.shape} differs from onnxruntime's {want.shape}; rebuild the engine"
        )
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    log.info("max |tensorrt - onnxruntime| = %.3g at batch %d", diff, batch)
    return {"max_abs_diff": diff, "batch": batch, "output": out_name}


__all__ = [
    "BuildArgs",
    "CalibrationBatches",
    "CalibratorCore",
    "NOT_INSTALLED",
    "PRECISIONS",
    "TensorSpec",
    "TrtRunner",
    "assemble_stats",
    "build_engine",
    "check_trt_version",
    "compare_with_onnxruntime",
    "describe_io",
    "format_parser_error",
    "numpy_dtype",
    "parse_batch_range",
    "profile_shapes",
    "resolve_input_shape",
    "summarize_ms",
    "tensorrt_available",
    "time_engine",
    "validate_build_args",
]

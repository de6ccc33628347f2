"""Build a serialized TensorRT engine from an ONNX file: argument checks, then :func:`build_engine`."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress_base.errors import CompressError, first_line
from exporters.tensorrt.availability import _import_trt, _last_error, _logger, enum_name, parse_version
from exporters.tensorrt.caches import (
    default_calibration_cache,
    read_timing_cache,
    resolve_timing_cache,
    write_bytes_atomic,
)
from exporters.tensorrt.calibration import (
    DEFAULT_CALIBRATION_BATCH,
    CalibrationBatches,
    CalibratorCore,
    _make_calibrator,
    check_calibration_batch_size,
)
from exporters.tensorrt.cuda import make_backend
from exporters.tensorrt.shapes import is_int_at_least, parse_batch_range, parse_sample_shape, profile_shapes

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_BATCH = (1, 1, 8)


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
    if not is_int_at_least(workspace_mb, 1):
        raise CompressError(f"workspace {workspace_mb!r} must be a positive number of MiB, e.g. 1024")
    cache = resolve_timing_cache(timing_cache)
    check_calibration_batch_size(calibration_batch_size)
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
        return first_line(str(err)) or "unknown parser error"
    desc = first_line(str(desc))
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


def _explicit_batch_flags(trt) -> int:
    if parse_version(trt.__version__)[0] >= 10:
        return 0  # explicit batch is the only mode
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _set_precision(trt, builder, config, precision: str) -> None:
    """Builder flags for ``precision``: fp32 without TF32, fp16, or int8 with FP16 fallback."""
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32, not TensorFloat-32 matmuls/convs
    if precision in ("fp16", "int8"):
        if not getattr(builder, "platform_has_fast_fp16", True):
            log.warning("this GPU has no fast FP16; the %s engine may be no faster than FP32", precision)
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if not getattr(builder, "platform_has_fast_int8", True):
            log.warning("this GPU has no fast INT8; the INT8 engine may be no faster than FP16")
        config.set_flag(trt.BuilderFlag.INT8)


def _add_profile(builder, config, network, args: BuildArgs) -> dict:
    """One optimization profile for the dynamic inputs; a description of every network input."""
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
    return inputs


def _use_timing_cache(config, path: Path | None):
    """The timing cache the build reads and extends (None without a cache file)."""
    if path is None:
        return None
    cache = config.create_timing_cache(read_timing_cache(path))
    if not config.set_timing_cache(cache, False):
        log.warning("timing cache %s was made by another GPU or TensorRT; starting a fresh one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def _parse_onnx(trt, builder, logger, onnx_path: Path):
    """The network parsed from ``onnx_path`` and its parser (which owns the parsed weights)."""
    network = builder.create_network(_explicit_batch_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        n = parser.num_errors
        first = format_parser_error(parser.get_error(0)) if n else "no error reported"
        more = f" (and {n - 1} more)" if n > 1 else ""
        raise CompressError(
            f"TensorRT cannot parse {onnx_path.name}: {first}{more}; simplify or re-export the "
            "model (a lower opset, or replace the operation)"
        )
    return network, parser


def _add_calibration(trt, builder, config, network, inputs: dict, args: BuildArgs, calibration_batches,
                     max_calibration_batches: int | None, backend):
    """INT8 calibration of the network's one input at its opt shape: the calibrator core, the CUDA
    backend that feeds it (None without calibration data) and the TensorRT calibrator."""
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
    return core, cuda, calibrator


def _serialize(builder, network, config, core, cuda, calibrator, onnx_path: Path, logger):
    """The serialized engine (calibrating first for INT8), the calibration's CUDA buffers freed after."""
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
        raise CompressError(
            f"TensorRT could not build an engine from {onnx_path.name}: "
            f"{_last_error(logger, 'see the TensorRT log')}; "
            "try a larger workspace, a smaller batch range or --precision fp32"
        )
    return serialized


def _description(trt, args: BuildArgs, inputs: dict, core, seconds: float) -> dict:
    """The JSON-able description of a finished build."""
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
    after calibration and is what a later build without calibration data uses. ``backend`` picks
    the CUDA buffers that feed calibration (see :func:`~exporters.tensorrt.cuda.make_backend`).
    Returns a JSON-able description of the build.
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
    network, parser = _parse_onnx(trt, builder, logger, args.onnx_path)  # parser: keep until the build is done

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, args.workspace_bytes)
    _set_precision(trt, builder, config, args.precision)
    inputs = _add_profile(builder, config, network, args)
    cache = _use_timing_cache(config, args.timing_cache)

    core = cuda = calibrator = None
    if args.precision == "int8":
        core, cuda, calibrator = _add_calibration(trt, builder, config, network, inputs, args, calibration_batches,
                                                  max_calibration_batches, backend)

    serialized = _serialize(builder, network, config, core, cuda, calibrator, args.onnx_path, logger)
    write_bytes_atomic(args.engine_path, serialized)
    if cache is not None:
        write_bytes_atomic(args.timing_cache, config.get_timing_cache().serialize())
    seconds = time.perf_counter() - start
    log.info(
        "built %s engine %s from %s in %.1f s", args.precision, args.engine_path, args.onnx_path.name, seconds
    )
    return _description(trt, args, inputs, core, seconds)

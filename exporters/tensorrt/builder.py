"""Build a serialized TensorRT engine from an ONNX file: argument checks, then :func:`build_engine`.

One code path for TensorRT 10.0 to 11.x: the network is strongly typed
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``), so each layer runs in the type its ONNX gives
it, and no precision flag (``BuilderFlag.FP16``/``INT8``) or INT8 calibrator is used. TensorRT 11
removed those (weak typing, ``IInt8EntropyCalibrator2``, ``int8_calibrator``,
``set_calibration_profile``), and 10.x deprecates them; the implicit calibrator was removed here
rather than kept behind a version check, because its int8 model existed only inside TensorRT and
its accuracy was never measured, while an explicit Q/DQ ONNX (:mod:`exporters.precision`) is
evaluated through onnxruntime before any engine is built, and builds alike on JetPack 6 (10.3) and
on 11.x.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from compress_base.errors import CompressError, first_line
from exporters.tensorrt.availability import _import_trt, _last_error, _logger, create, enum_name
from exporters.tensorrt.caches import read_timing_cache, resolve_timing_cache, write_bytes_atomic
from exporters.tensorrt.engine_onnx import onnx_for_engine
from exporters.tensorrt.layers import engine_layers, format_layers
from exporters.tensorrt.shapes import is_int_at_least, parse_batch_range, parse_sample_shape, profile_shapes

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_BATCH = (1, 1, 8)


@dataclass(frozen=True)
class BuildArgs:
    """Validated arguments of :func:`build_engine`."""

    onnx_path: Path
    engine_path: Path
    precision: str | None
    batch: tuple[int, int, int]
    input_shape: tuple[int, ...] | None
    workspace_bytes: int
    timing_cache: Path | None


def validate_build_args(
    onnx_path,
    engine_path,
    precision: str | None = None,
    batch=DEFAULT_BATCH,
    input_shape=None,
    workspace_mb: int = 1024,
    timing_cache=None,
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
    if precision is not None and precision not in PRECISIONS:
        raise CompressError(f"precision {precision!r} is not supported: choose one of {', '.join(PRECISIONS)}")
    batch = parse_batch_range(batch)
    shape = parse_sample_shape(input_shape)
    if not is_int_at_least(workspace_mb, 1):
        raise CompressError(f"workspace {workspace_mb!r} must be a positive number of MiB, e.g. 1024")
    return BuildArgs(
        onnx_path=onnx_path,
        engine_path=engine_path,
        precision=precision,
        batch=batch,
        input_shape=shape,
        workspace_bytes=workspace_mb * 2**20,
        timing_cache=resolve_timing_cache(timing_cache),
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


def _strongly_typed(trt) -> int:
    """Network creation flags: strongly typed (each layer runs in the type its ONNX gives it)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


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
    network = builder.create_network(_strongly_typed(trt))
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


def _serialize(builder, network, config, onnx_path: Path, logger):
    """The serialized engine, or one CompressError line with TensorRT's last error."""
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CompressError(
            f"TensorRT could not build an engine from {onnx_path.name}: "
            f"{_last_error(logger, 'see the TensorRT log')}; "
            "try a larger workspace or a smaller batch range"
        )
    return serialized


def _inspect(trt, logger, serialized, inputs: dict) -> dict:
    """The built engine's layers per precision (:func:`~exporters.tensorrt.layers.engine_layers`),
    its inputs at the profile's opt shape."""
    runtime = create(trt, "Runtime", logger)
    engine = runtime.deserialize_cuda_engine(serialized)
    context = engine.create_execution_context() if engine is not None else None
    if context is None:
        raise CompressError(f"TensorRT cannot load the engine it just built: {_last_error(logger, 'see its log')}")
    try:
        return engine_layers(trt, engine, context, {name: tuple(d["profile"][1]) for name, d in inputs.items()})
    finally:
        del context, engine  # before the runtime that made them


def _description(trt, args: BuildArgs, precision: str, prepared: dict | None, inputs: dict, layers: dict,
                 seconds: float) -> dict:
    """The JSON-able description of a finished build."""
    return {
        "engine": str(args.engine_path),
        "onnx": str(args.onnx_path),
        "precision": precision,
        "prepared": prepared,
        "batch": list(args.batch),
        "inputs": inputs,
        "layers": layers,
        "workspace_mb": args.workspace_bytes // 2**20,
        "timing_cache": str(args.timing_cache) if args.timing_cache else None,
        "build_seconds": round(seconds, 3),
        "bytes": args.engine_path.stat().st_size,
        "tensorrt": trt.__version__,
    }


def build_engine(
    onnx_path,
    engine_path,
    precision: str | None = None,
    batch=DEFAULT_BATCH,
    input_shape=None,
    workspace_mb: int = 1024,
    timing_cache=None,
    calibration: Iterable[np.ndarray] | None = None,
) -> dict:
    """Build a strongly typed TensorRT engine from an ONNX file and write it atomically to ``engine_path``.

    The engine's precision is the ONNX's (:func:`~exporters.tensorrt.engine_onnx.onnx_precision`):
    ``precision`` None builds the file as it is; an fp32 ONNX asked for at ``"fp16"`` or ``"int8"``
    is first prepared at that precision beside the engine (int8 calibrates on ``calibration``,
    batches of preprocessed NCHW float32 inputs; see
    :func:`~exporters.tensorrt.engine_onnx.onnx_for_engine`). No weak-typing builder flag is set;
    an fp32 engine also has TensorFloat-32 turned off (TensorRT enables it by default on Ampere and
    newer), so fp32 means fp32.

    ``batch`` is the ``(min, opt, max)`` range of the dynamic batch axis (one optimization
    profile; an int fixes it); ``input_shape`` (C, H, W) fills dynamic non-batch axes and must
    match static ones. ``workspace_mb`` caps the builder's scratch memory. ``timing_cache`` is a
    file read before and rewritten after the build (it makes rebuilds fast; it is specific to the
    GPU and TensorRT version). Returns a JSON-able description of the build, with ``layers``: how
    many of the engine's layers run in each precision (its engine inspector).
    """
    args = validate_build_args(onnx_path, engine_path, precision, batch, input_shape, workspace_mb, timing_cache)
    trt = _import_trt()
    logger = _logger(trt)
    logger.errors.clear()
    start = time.perf_counter()
    builder = create(trt, "Builder", logger)  # first: no GPU is one line before any work
    onnx_file, precision, prepared = onnx_for_engine(args.onnx_path, args.precision, args.engine_path, calibration)
    network, parser = _parse_onnx(trt, builder, logger, onnx_file)  # parser: keep until the build is done
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, args.workspace_bytes)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # per-layer types for the inspector
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    inputs = _add_profile(builder, config, network, args)
    cache = _use_timing_cache(config, args.timing_cache)

    serialized = _serialize(builder, network, config, onnx_file, logger)
    write_bytes_atomic(args.engine_path, serialized)
    if cache is not None:
        write_bytes_atomic(args.timing_cache, config.get_timing_cache().serialize())
    seconds = time.perf_counter() - start
    layers = _inspect(trt, logger, serialized, inputs)
    log.info("built %s engine %s from %s in %.1f s: %s", precision, args.engine_path, onnx_file.name, seconds,
             format_layers(layers))
    return _description(trt, replace(args, onnx_path=onnx_file), precision, prepared, inputs, layers, seconds)

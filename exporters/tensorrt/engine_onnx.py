"""The ONNX file an engine is built from, and the precision it holds.

Engines are strongly typed: TensorRT runs each layer in the type its ONNX gives it (Q/DQ pairs for
int8, fp16 weights and casts for fp16), so the precision of an engine is decided in the ONNX. An
fp32 ONNX asked for at fp16 or int8 is first written at that precision by
:func:`exporters.precision.prepare_onnx` (recipe "tensorrt": symmetric int8 Q/DQ, zero points 0,
per-channel weights), beside the engine; an ONNX that already holds Q/DQ or fp16 is built as it is.
``onnx`` and :mod:`exporters.precision` are imported only here and only when called, so a board
that only times engines needs neither.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from compress_base.errors import CompressError, first_line

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def _graph(path: Path):
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:
        raise CompressError(f"{path} is not a readable ONNX file: {first_line(exc)}; export the model again") from None


def onnx_precision(path) -> str:
    """``"int8"`` (the graph holds Q/DQ nodes), ``"fp16"`` (fp16 weights or casts to fp16) or
    ``"fp32"``; a CompressError for Q/DQ that TensorRT cannot run (uint8 or non-zero zero points)."""
    from onnx import TensorProto, numpy_helper

    path = Path(path)
    graph = _graph(path)
    inits = {t.name: t for t in graph.initializer}
    qdq = [n for n in graph.node if n.op_type in QDQ_OPS]
    if qdq:
        for node in qdq:
            zero = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if zero is None:
                continue
            if zero.data_type == TensorProto.UINT8 or np.any(numpy_helper.to_array(zero) != 0):
                raise CompressError(
                    f"{path.name} holds asymmetric or uint8 Q/DQ (node '{node.name}'), which TensorRT cannot "
                    "run: quantize for TensorRT (symmetric int8, zero points 0: a run with --target gpu and "
                    "--precision int8), or give the fp32 ONNX with --precision int8"
                )
        return "int8"
    half = any(t.data_type == TensorProto.FLOAT16 for t in graph.initializer) or any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT16 for a in n.attribute)
        for n in graph.node
    )
    return "fp16" if half else "fp32"


def onnx_input(path) -> tuple[str, tuple[int, ...]]:
    """The name and shape of the ONNX file's first input (-1 for a dynamic axis)."""
    value = _graph(Path(path)).input[0]
    dims = value.type.tensor_type.shape.dim
    return value.name, tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in dims)


def prepared_path(engine_path, precision: str) -> Path:
    """Where the ONNX prepared for an engine goes: beside it, ``model.engine`` -> ``model.trt-int8.onnx``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(f"{engine_path.stem}.trt-{precision}.onnx")


def onnx_for_engine(onnx_path, precision: str | None, engine_path,
                    calibration: Iterable[np.ndarray] | None = None) -> tuple[Path, str, dict | None]:
    """The ONNX to build an engine of ``precision`` from, its precision, and what preparing it did.

    ``precision`` None (or the ONNX's own) builds ``onnx_path`` as it is. An fp32 ONNX asked for at
    fp16 or int8 is prepared at :func:`prepared_path` (int8 calibrates on ``calibration``: batches
    of input arrays, NCHW float32, preprocessed as the model is fed); the third value is then
    :func:`~exporters.precision.prepare_onnx`'s description with ``"from"`` (the fp32 file) and
    ``"onnx"`` (the prepared one), else None.
    """
    onnx_path = Path(onnx_path)
    holds = onnx_precision(onnx_path)
    if precision is None or precision == holds:
        return onnx_path, holds, None
    if holds != "fp32":
        what = "int8 Q/DQ" if holds == "int8" else "fp16 weights"
        raise CompressError(
            f"{onnx_path.name} already holds {what}, so its engine is {holds}, not {precision}: build it with "
            f"--precision {holds} (or without --precision), or give the fp32 ONNX for an {precision} engine"
        )
    if precision == "int8" and calibration is None:
        raise CompressError(
            f"an int8 engine from the fp32 {onnx_path.name} needs calibration images: pass --calib-data DIR "
            "(images like the training data), or build the model.int8.onnx that `compress run --precision "
            "int8` writes"
        )
    from exporters.precision import prepare_onnx

    dst = prepared_path(engine_path, precision)
    if dst.resolve() == onnx_path.resolve():
        raise CompressError(f"{onnx_path.name} would be overwritten by its {precision} copy; rename the engine")
    info = prepare_onnx(onnx_path, dst, precision, "tensorrt", calibration)
    return dst, precision, {"from": str(onnx_path), "onnx": str(dst), **info}

"""Low-precision ONNX for deployment: INT8 as explicit Q/DQ (post-training quantization with
calibration) and FP16 with fp32 inputs and outputs, made with onnxruntime's maintained tools.

The INT8 format follows the target (``recipe``): TensorRT's explicit quantization wants symmetric
int8 on weights (per output channel) and activations, zero points 0, biases left in float; the
onnxruntime CPU kernels run asymmetric uint8 activations with int8 weights fast (on ResNet-18 the
onnxruntime recipe ran 2.6x faster than fp32 on one CPU thread, the TensorRT one 0.93x).
NVIDIA ModelOpt's ONNX quantization is not used: it cannot be installed here, and no path of this
module runs code that was not run.
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx

from compress_base.errors import CompressError, first_line
from compress_base.fileio import write_atomic
from profiles import QUANTIZATIONS

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8")  # the low precisions this module writes (fp32 is model.onnx itself)
RECIPES = QUANTIZATIONS  # "tensorrt" | "onnxruntime": a profile's `quantization`
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")  # the layers whose inputs and weights get Q/DQ pairs

_DESCRIPTIONS = {
    "tensorrt": "int8 QDQ (onnxruntime.quantization, MinMax calibration): symmetric s8 weights per channel, "
                "symmetric s8 activations, zero points 0, float biases (TensorRT explicit quantization)",
    "onnxruntime": "int8 QDQ (onnxruntime.quantization, MinMax calibration): symmetric s8 weights per channel, "
                   "asymmetric u8 activations (onnxruntime CPU kernels)",
    "fp16": "fp16 weights and activations, fp32 inputs and outputs (onnxruntime.transformers.float16)",
}


def prepare_onnx(src: str | Path, dst: str | Path, precision: str, recipe: str,
                 calibration: Iterable[np.ndarray] | None = None, exclude: Sequence[str] = ()) -> dict:
    """Write ``src`` (an fp32 ONNX classifier) at ``precision`` (fp16 | int8) to ``dst``, atomically.

    int8 calibrates on ``calibration`` (batches of input images, NCHW float32, as the model is fed)
    with the quantization ``recipe`` of the target ("tensorrt" | "onnxruntime"); ``exclude`` names
    nodes (of :func:`quantizable_nodes`) left in fp32. fp16 ignores the recipe and the calibration.
    Returns ``{"recipe": description, "calibration_images": n, "quantized_nodes": n}``.
    """
    src, dst = Path(src), Path(dst)
    if precision not in PRECISIONS:
        raise CompressError(f"precision {precision!r} has no low-precision ONNX: use one of {', '.join(PRECISIONS)}")
    if recipe not in RECIPES:
        raise CompressError(f"quantization recipe {recipe!r} is unknown: use one of {', '.join(RECIPES)}")
    if not src.is_file():
        raise CompressError(f"ONNX file {src} does not exist; export the model first")
    model = _load(src)
    if precision == "fp16":
        return _write_fp16(model, dst)
    batches = list(calibration) if calibration is not None else []
    images = sum(len(b) for b in batches)
    if images == 0:
        raise CompressError("int8 quantization needs calibration images: give a few hundred training images")
    with tempfile.TemporaryDirectory(prefix="compress-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        _pre_process(model, prepared)
        quantized = Path(tmp) / "int8.onnx"
        _quantize(prepared, quantized, recipe, batches, exclude)
        payload = onnx.load(str(quantized)).SerializeToString()
    write_atomic(dst, lambda tmp: tmp.write_bytes(payload))
    nodes = count_quantized(dst)
    log.info("wrote %s: %d of its %s nodes quantized (%s recipe, %d calibration images)",
             dst.name, nodes, "/".join(QUANTIZED_OPS), recipe, images)
    return {"recipe": _DESCRIPTIONS[recipe], "calibration_images": images, "quantized_nodes": nodes}


def quantizable_nodes(src: str | Path) -> list[str]:
    """The Conv/Gemm/MatMul node names of ``src`` after the pre-processing int8 quantization runs,
    in graph order: the names ``prepare_onnx(..., exclude=...)`` understands."""
    with tempfile.TemporaryDirectory(prefix="compress-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        _pre_process(_load(Path(src)), prepared)
        graph = onnx.load(str(prepared)).graph
    return [n.name for n in graph.node if n.op_type in QUANTIZED_OPS]


def count_quantized(path: str | Path) -> int:
    """Conv/Gemm/MatMul nodes of ``path`` whose weight input comes from a DequantizeLinear."""
    graph = onnx.load(str(path)).graph
    dequantized = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    return sum(1 for n in graph.node if n.op_type in QUANTIZED_OPS and len(n.input) > 1 and n.input[1] in dequantized)


def _load(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise CompressError(f"{path} is not a readable ONNX file: {first_line(exc)}; export the model again") from exc


def _write_fp16(model: onnx.ModelProto, dst: Path) -> dict:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(model, keep_io_types=True)
    payload = half.SerializeToString()
    write_atomic(dst, lambda tmp: tmp.write_bytes(payload))
    log.info("wrote %s (fp16, fp32 inputs and outputs)", dst.name)
    return {"recipe": _DESCRIPTIONS["fp16"], "calibration_images": 0, "quantized_nodes": 0}


def _pre_process(model: onnx.ModelProto, dst: Path) -> None:
    """onnxruntime's quantization pre-processing: shape inference and graph optimisation (constant
    folding, Conv+BatchNorm fusion), so per-channel scales land on the fused weights."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(model, str(dst), skip_symbolic_shape=True)


def _quantize(src: Path, dst: Path, recipe: str, batches: list[np.ndarray], exclude: Sequence[str]) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    tensorrt = recipe == "tensorrt"
    extra = {"WeightSymmetric": True, "ActivationSymmetric": tensorrt}
    if tensorrt:
        extra["QuantizeBias"] = False  # TensorRT fuses float biases; an int32 bias DQ is not its format
    quantize_static(
        str(src), str(dst), _Reader(src, batches), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8, weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude), extra_options=extra)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over numpy batches (``get_next`` until None)."""

    def __init__(self, model: Path, batches: list[np.ndarray]):
        self.name = onnx.load(str(model), load_external_data=False).graph.input[0].name
        self.batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: np.ascontiguousarray(batch, dtype=np.float32)}

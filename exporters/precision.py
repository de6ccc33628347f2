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
CALIBRATION_BATCH = 16  # images per calibration step: onnxruntime holds every intermediate tensor of a step

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
    _check_batches(model, batches)
    with tempfile.TemporaryDirectory(prefix="compress-int8-") as tmp:
        prepared = prepared_onnx(src, Path(tmp))
        quantized = Path(tmp) / "int8.onnx"
        _quantize(prepared, quantized, recipe, batches, exclude)
        payload = onnx.load(str(quantized)).SerializeToString()
    write_atomic(dst, lambda tmp: tmp.write_bytes(payload))
    nodes = count_quantized(dst)
    log.debug("wrote %s: %d of its %s nodes quantized (%s recipe, %d calibration images)",
             dst.name, nodes, "/".join(QUANTIZED_OPS), recipe, images)
    return {"recipe": _DESCRIPTIONS[recipe], "calibration_images": images, "quantized_nodes": nodes}


def quantizable_nodes(src: str | Path) -> list[str]:
    """The Conv/Gemm/MatMul node names of ``src`` after the pre-processing int8 quantization runs,
    in graph order: the names ``prepare_onnx(..., exclude=...)`` understands."""
    with tempfile.TemporaryDirectory(prefix="compress-int8-") as tmp:
        graph = onnx.load(str(prepared_onnx(src, Path(tmp)))).graph
    return [n.name for n in graph.node if n.op_type in QUANTIZED_OPS]


def prepared_onnx(src: str | Path, folder: Path) -> Path:
    """``folder/prepared.onnx``: ``src`` after onnxruntime's quantization pre-processing (shape
    inference, constant folding, Conv+BatchNorm fusion), the graph int8 quantization works on. The
    same source gives the same node and tensor names every time."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = folder / "prepared.onnx"
    quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    return out


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


def _check_batches(model: onnx.ModelProto, batches: list[np.ndarray]) -> None:
    """Each calibration batch must be images of the model's input shape (its fixed dimensions)."""
    dims = [d.dim_value or None for d in model.graph.input[0].type.tensor_type.shape.dim]
    for batch in batches:
        shape = np.shape(batch)
        if len(shape) != len(dims) or any(want and got != want for got, want in zip(shape[1:], dims[1:])):
            want = "x".join(str(d or "N") for d in dims)
            raise CompressError(f"calibration batch of shape {'x'.join(map(str, shape))} does not fit the model's "
                                f"input {want}: give images at the model's input shape")


def _write_fp16(model: onnx.ModelProto, dst: Path) -> dict:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(model, keep_io_types=True)
    payload = half.SerializeToString()
    write_atomic(dst, lambda tmp: tmp.write_bytes(payload))
    log.debug("wrote %s (fp16, fp32 inputs and outputs)", dst.name)
    return {"recipe": _DESCRIPTIONS["fp16"], "calibration_images": 0, "quantized_nodes": 0}


def _quantize(src: Path, dst: Path, recipe: str, batches: list[np.ndarray], exclude: Sequence[str]) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    tensorrt = recipe == "tensorrt"
    extra = {"WeightSymmetric": True, "ActivationSymmetric": tensorrt}
    if tensorrt:
        extra["QuantizeBias"] = False  # TensorRT fuses float biases; an int32 bias DQ is not its format
    quantize_static(
        str(src), str(dst), CalibrationReader(src, batches), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8, weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude), extra_options=extra)


class CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over numpy batches: ``get_next`` until None, or iterate."""

    def __init__(self, model: Path, batches: list[np.ndarray]):
        self.name = onnx.load(str(model), load_external_data=False).graph.input[0].name
        self.batches: Iterator[np.ndarray] = (batch[i:i + CALIBRATION_BATCH] for batch in batches
                                              for i in range(0, len(batch), CALIBRATION_BATCH))

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: np.ascontiguousarray(batch, dtype=np.float32)}

    def __iter__(self) -> Iterator[dict]:
        return iter(self.get_next, None)

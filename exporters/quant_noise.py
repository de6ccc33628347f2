"""Which layers of an INT8 Q/DQ model lose the most to quantization: the signal-to-quantization-noise
ratio (SQNR, dB; lower is noisier) of each Conv/Gemm/MatMul layer's own inputs, its weights and its
activation input, each quantized alone. It ranks the layers worth re-quantizing with one kept in fp32
(the accuracy that recovers is what the report gives); it is a ranking, not an accuracy."""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .precision import QUANTIZED_OPS, CalibrationReader, prepared_onnx

log = logging.getLogger(__name__)


def layer_noise(src: str | Path, quantized: str | Path, batches: Sequence[np.ndarray]) -> dict[str, float]:
    """SQNR in dB of each quantized Conv/Gemm/MatMul node of ``quantized`` (made by
    :func:`exporters.precision.prepare_onnx` from the fp32 ``src``): the lower of its weight's and its
    activation input's (over ``batches`` of input images), keyed by node name."""
    from onnxruntime.quantization import qdq_loss_debug

    with tempfile.TemporaryDirectory(prefix="compress-noise-") as tmp:
        fp32 = prepared_onnx(src, Path(tmp))
        graph = onnx.load(str(fp32)).graph
        q_aug, f_aug = Path(tmp) / "q.onnx", Path(tmp) / "f.onnx"
        qdq_loss_debug.modify_model_output_intermediate_tensors(str(quantized), str(q_aug))
        qdq_loss_debug.modify_model_output_intermediate_tensors(str(fp32), str(f_aug))
        matched = qdq_loss_debug.create_activation_matching(
            qdq_loss_debug.collect_activations(str(q_aug), CalibrationReader(fp32, list(batches))),
            qdq_loss_debug.collect_activations(str(f_aug), CalibrationReader(fp32, list(batches))))
    activation = {name: errors["qdq_err"] for name, errors in qdq_loss_debug.compute_activation_error(matched).items()}
    weight = _weight_noise(graph, onnx.load(str(quantized)).graph)
    noise = {}
    for node in graph.node:
        if node.op_type in QUANTIZED_OPS:
            found = [v for v in (activation.get(node.input[0]), weight.get(node.name)) if v is not None]
            if found:
                noise[node.name] = float(min(found))
    return noise


def _weight_noise(fp32: onnx.GraphProto, quantized: onnx.GraphProto) -> dict[str, float]:
    """SQNR (dB) of each quantized layer's weight: the fp32 initializer against its dequantized int8 copy."""
    floats = {t.name: numpy_helper.to_array(t) for t in fp32.initializer}
    consts = {t.name: numpy_helper.to_array(t) for t in quantized.initializer}
    dequantizers = {n.output[0]: n for n in quantized.node if n.op_type == "DequantizeLinear"}
    layers = {n.name: n for n in fp32.node if n.op_type in QUANTIZED_OPS and len(n.input) > 1 and n.input[1] in floats}
    noise = {}
    for node in quantized.node:
        dq = dequantizers.get(node.input[1]) if node.name in layers and len(node.input) > 1 else None
        if dq is None or dq.input[0] not in consts:
            continue
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        values, scale = consts[dq.input[0]].astype(np.float64), consts[dq.input[1]].astype(np.float64)
        zero = consts[dq.input[2]].astype(np.float64) if len(dq.input) > 2 and dq.input[2] else np.zeros_like(scale)
        if scale.ndim == 1:  # per channel: broadcast along the axis
            shape = [1] * values.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        want = floats[layers[node.name].input[1]].astype(np.float64)
        noise[node.name] = sqnr(want, (values - zero) * scale)
    return noise


def sqnr(signal: np.ndarray, approx: np.ndarray) -> float:
    """10 log10(|signal|² / |signal - approx|²) in dB; inf when they are equal."""
    error = float(np.sum((signal - approx) ** 2))
    return float("inf") if error == 0 else 10 * float(np.log10(max(float(np.sum(signal ** 2)), 1e-30) / error))

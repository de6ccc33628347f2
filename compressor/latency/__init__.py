"""Latency of an architecture on the target: a per-layer lookup table measured there, calibrated
on whole-model measurements (docs/ALGORITHMS.md section 4).

* :mod:`.layers`: the Conv2d/Linear calls of a space and their channel counts per architecture;
* :mod:`.probes`: the single-layer graphs the table times, and the shuffled rounds that time them;
* :mod:`.table`: the on-disk table of single-layer measurements (per profile and hardware), the
  hardware it was measured on (the runtime is :func:`exporters.runtime_choice.choose_runtime`'s);
* :mod:`.predictor`: :class:`LatencyModel` (``predict``, differentiable ``expected``);
* :mod:`.calibration`: the whole architectures measured to calibrate it, and the fit;
* :mod:`.build`: :func:`build_latency_model` and :func:`build_lut` (measure, calibrate, save);
* :mod:`.evaluate`: :func:`evaluate_predictor`, predictions against fresh measurements.
"""
from .build import build_latency_model, build_lut
from .calibration import (
    calibration_architectures,
    fit_affine,
    fit_calibration,
    measure_architectures,
    model_fingerprint,
    random_architecture,
)
from .evaluate import evaluate_predictor
from .layers import DimTable, LayerConfig, LayerInstance, grid_points, trace_layers
from .predictor import ExpectedLatency, LatencyModel
from .table import LatencyTable, hardware_fingerprint

__all__ = [
    "DimTable", "ExpectedLatency", "LatencyModel", "LatencyTable", "LayerConfig", "LayerInstance",
    "build_latency_model", "build_lut", "calibration_architectures", "evaluate_predictor",
    "fit_affine", "fit_calibration", "grid_points", "hardware_fingerprint", "measure_architectures",
    "model_fingerprint", "random_architecture", "trace_layers",
]

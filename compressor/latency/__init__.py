"""Latency of an architecture on the target: a per-layer lookup table measured there, calibrated
on whole-model measurements (ALGORITHMS.md section 4).

* :mod:`.layers`: the Conv2d/Linear calls of a space and their channel counts per architecture;
* :mod:`.table`: the on-disk table of single-layer measurements (per profile and hardware);
* :mod:`.predictor`: :class:`LatencyModel` (``predict``, differentiable ``expected``), its
  calibration, :func:`build_latency_model`, :func:`evaluate_predictor` and :func:`build_lut`.
"""
from .layers import DimTable, LayerConfig, LayerInstance, grid_points, trace_layers
from .predictor import (ExpectedLatency, LatencyModel, build_latency_model, build_lut, calibration_architectures,
                        evaluate_predictor, fit_affine, fit_calibration, measure_architectures, model_fingerprint,
                        random_architecture)
from .table import LatencyTable, choose_runtime, hardware_fingerprint

__all__ = [
    "DimTable", "ExpectedLatency", "LatencyModel", "LatencyTable", "LayerConfig", "LayerInstance",
    "build_latency_model", "build_lut", "calibration_architectures", "choose_runtime", "evaluate_predictor",
    "fit_affine", "fit_calibration", "grid_points", "hardware_fingerprint", "measure_architectures",
    "model_fingerprint", "random_architecture", "trace_layers",
]

"""Everything that leaves PyTorch: ONNX export and verification, and the latency runners."""

from .onnx_export import export_onnx, random_input, verify_onnx
from .runners import OrtRunner, Runner, TorchRunner, available_runners, make_runner
from .stats import LatencyStats

__all__ = [
    "LatencyStats",
    "OrtRunner",
    "Runner",
    "TorchRunner",
    "available_runners",
    "export_onnx",
    "make_runner",
    "random_input",
    "verify_onnx",
]

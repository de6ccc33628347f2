"""Everything that leaves PyTorch: ONNX export and verification, TensorRT engines, the latency runners.

Names are imported on first use, so that ``exporters.bench`` and ``exporters.tensorrt`` run on a
board without PyTorch (a Jetson measuring an engine).
"""
from importlib import import_module

_EXPORTS = {
    "LatencyStats": "stats",
    "OrtRunner": "runners",
    "Runner": "runners",
    "TorchRunner": "torch_runner",
    "available_runners": "runners",
    "choose_runtime": "runtime_choice",
    "make_runner": "runners",
    "export_onnx": "onnx_export",
    "random_input": "onnx_export",
    "verify_onnx": "onnx_export",
    "build_engine": "tensorrt",
    "tensorrt_available": "tensorrt",
    "TrtRunner": "tensorrt",
    "bench": "bench",
    "write_bench": "bench",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

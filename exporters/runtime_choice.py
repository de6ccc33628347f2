"""Which runtime times a model for a target profile on this machine: one rule (:func:`choose_runtime`)
for a run's measurements, the latency table and ``compress bench``.

Imports neither PyTorch nor onnxruntime, so that benching a TensorRT engine on a board needs neither.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from compress_base.errors import CompressError

log = logging.getLogger(__name__)

FORMATS = (None, "onnx", "engine")


def _times(runtime: str, fmt: str | None) -> bool:
    """Whether ``runtime`` can time a model given as ``fmt``."""
    if fmt == "engine":
        return runtime == "tensorrt"
    if fmt == "onnx":
        return runtime.startswith("onnxruntime-")
    return True


def choose_runtime(profile, fmt: str | None = None, requested: str | None = None,
                   usable: Sequence[str] | None = None) -> str:
    """The runtime that times a model for ``profile`` here: ``requested`` when given (it must time
    ``fmt`` and be usable; a warning when the profile does not name it), else the first of the
    profile's ``runtimes`` that times ``fmt`` and is usable here. None is a CompressError.

    ``fmt`` is what is timed:

    - ``None``: a model as the runners take it (an ONNX file or a module; TensorRT builds its
      engine from the ONNX file): a run's measurements and the latency table;
    - ``"onnx"``: an ONNX file as it is, by onnxruntime (``compress bench``: no engine is built);
    - ``"engine"``: a TensorRT engine, on TensorRT even where the profile's list omits it (a GPU
      profile only).

    ``usable`` lists the runtime names usable here (default:
    :func:`exporters.runners.available_runners`; bench passes the onnxruntime ones, so that it
    never imports PyTorch).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown model format {fmt!r}: use one of {FORMATS}")
    if fmt == "engine":
        if requested not in (None, "tensorrt"):
            raise CompressError(
                f"a TensorRT engine runs only on the 'tensorrt' runtime, not {requested!r}; bench the "
                ".onnx file for other runtimes"
            )
        if profile.device != "gpu":
            raise CompressError(
                f"profile '{profile.name}' is a CPU target; TensorRT engines need an NVIDIA GPU, so "
                "bench the .onnx file there"
            )
        return "tensorrt"
    if usable is None:
        from exporters.runners import available_runners

        usable = available_runners()
    usable = list(usable)
    if requested is not None:
        return _check_requested(profile, fmt, requested, usable)
    wanted = [r for r in profile.runtimes if _times(r, fmt)]
    for name in wanted:
        if name in usable:
            return name
    if fmt is None:
        raise CompressError(
            f"target {profile.name!r} measures with {', '.join(profile.runtimes)} and none of them is usable on "
            "this machine: run on the target device, or use --target cpu"
        )
    if not wanted:
        raise CompressError(
            f"profile '{profile.name}' names no onnxruntime runtime ({', '.join(profile.runtimes)}); "
            f"pass --runtime, e.g. {usable[0] if usable else 'onnxruntime-cpu'}"
        )
    raise CompressError(
        f"none of profile '{profile.name}''s onnxruntime runtimes ({', '.join(wanted)}) is usable "
        f"here (this onnxruntime offers {', '.join(usable) or 'none'}); install onnxruntime-gpu "
        "or pass --runtime"
    )


def _check_requested(profile, fmt: str | None, requested: str, usable: list[str]) -> str:
    if fmt == "onnx" and requested == "tensorrt":
        raise CompressError(
            "the 'tensorrt' runtime times engines: build one with `compress engine MODEL.onnx` and "
            "bench the .engine file, or use --runtime onnxruntime-tensorrt"
        )
    if not _times(requested, fmt):
        raise CompressError(
            f"runtime {requested!r} cannot time an ONNX file; use one of "
            f"{', '.join(usable) or 'the onnxruntime runtimes'}"
        )
    if requested not in usable:
        raise CompressError(
            f"runtime {requested!r} is not usable here (usable here: {', '.join(usable) or 'none'}); install "
            "the build that has it or choose another runtime"
        )
    if requested not in profile.runtimes:
        log.warning("runtime %s is not in profile %s's runtimes %s", requested, profile.name, list(profile.runtimes))
    return requested

"""How many layers of an engine run in each precision, from TensorRT's engine inspector.

``IEngineInspector`` (``EngineInspector`` in Python, 8.2 and later; its names checked in 10.3 to
11.4) describes each layer of a built engine as JSON. With the engine built at
``ProfilingVerbosity.DETAILED`` (:func:`~exporters.tensorrt.builder.build_engine` does), a layer
lists its input and output tensors with a ``"Format/Datatype"`` text such as ``"Row major linear
FP32"`` or ``"Thirty-two wide channel vectorized row major Int8 format"``. A layer's precision is
the data type of its first input (the type its kernel reads); a layer without one, or an engine
built with less verbosity, counts as ``unknown``. Dynamic shapes make TensorRT print "N/A due to
dynamic shapes" unless the inspector is given an execution context whose input shapes are set, so
:func:`engine_layers` sets them first.
"""
from __future__ import annotations

import json
import re

from compress_base.errors import CompressError, first_line
from exporters.tensorrt.availability import enum_name

# data type words of TensorRT's format texts -> the names this package reports
_TYPES = {"fp32": "fp32", "float": "fp32", "fp16": "fp16", "half": "fp16", "bf16": "bf16", "int8": "int8",
          "uint8": "uint8", "int32": "int32", "int64": "int64", "int4": "int4", "fp8": "fp8", "fp4": "fp4",
          "bool": "bool"}
_TYPE_WORD = re.compile(r"\b(" + "|".join(sorted(_TYPES, key=len, reverse=True)) + r")\b", re.IGNORECASE)
ORDER = ("int8", "fp16", "bf16", "fp32", "fp8", "fp4", "int4", "uint8", "int32", "int64", "bool", "unknown")


def format_type(text) -> str:
    """The precision named in a ``"Format/Datatype"`` text (``"unknown"`` where it names none)."""
    m = _TYPE_WORD.search(str(text))
    return _TYPES[m.group(1).lower()] if m else "unknown"


def layer_precision(layer) -> str:
    """The precision of one layer of the inspector's JSON: the type of its first input tensor whose
    type is shown (else of its first output)."""
    if not isinstance(layer, dict):
        return "unknown"  # ProfilingVerbosity.LAYER_NAMES_ONLY gives names only
    tensors = [*layer.get("Inputs", []), *layer.get("Outputs", [])]
    for tensor in tensors:
        if isinstance(tensor, dict) and format_type(tensor.get("Format/Datatype", "")) != "unknown":
            return format_type(tensor["Format/Datatype"])
    return "unknown"


def summarize_layers(info: str) -> dict:
    """``{"layers": n, "precisions": {precision: count}, "reformats": n}`` from the inspector's
    engine information (JSON text). ``reformats`` counts Reformat layers: the copies TensorRT adds
    where one layer's output type or layout is not what the next one reads."""
    try:
        layers = json.loads(info)["Layers"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CompressError(
            f"TensorRT's engine inspector gave no layer list ({first_line(exc)}); rebuild the engine with "
            "`compress engine`"
        ) from None
    counts: dict[str, int] = {}
    for layer in layers:
        p = layer_precision(layer)
        counts[p] = counts.get(p, 0) + 1
    reformats = sum(1 for layer in layers if isinstance(layer, dict) and layer.get("LayerType") == "Reformat")
    return {"layers": len(layers), "precisions": {p: counts[p] for p in ORDER if p in counts},
            "reformats": reformats}


def engine_layers(trt, engine, context, shapes: dict[str, tuple[int, ...]] | None = None) -> dict:
    """:func:`summarize_layers` of a deserialized ``engine``; ``context`` is an execution context of
    it whose input shapes are set, or are set here to ``shapes``. Adds ``verbosity``: the
    engine's profiling verbosity (per-layer types need ``DETAILED``)."""
    for name, shape in (shapes or {}).items():
        if not context.set_input_shape(name, shape):
            raise CompressError(f"TensorRT rejects shape {tuple(shape)} for input '{name}' of the engine")
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    summary = summarize_layers(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    summary["verbosity"] = enum_name(engine.profiling_verbosity).lower()
    return summary


def format_layers(summary: dict) -> str:
    """``"52 layers: 40 int8, 10 fp32, 2 fp16 (3 reformats)"``."""
    parts = ", ".join(f"{n} {p}" for p, n in summary["precisions"].items())
    line = f"{summary['layers']} layers: {parts or 'none'}"
    if summary.get("reformats"):
        line += f" ({summary['reformats']} reformats)"
    if summary.get("verbosity") not in (None, "detailed"):
        line += " (built without detailed profiling verbosity: layer types unknown)"
    return line

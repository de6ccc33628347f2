"""The graphs a latency table times and how they are timed: one Conv2d/Linear layer each, or a
whole architecture, timed in shuffled rounds.

Each single-layer graph is a Conv (with bias, as batch norm folds into it on export) or a
MatMul + Add, built with the ONNX helper API, fp32 (or the same layer as an ``nn.Module`` for the
torch runtimes). For a model that ships in fp16 or int8 and is timed through onnxruntime, every
graph, whole models included, is first rewritten in that precision (:func:`in_precision`: int8
Q/DQ with the target's quantization recipe), so the table times what will be deployed.
Activations, additions, pooling and the layout changes between layers are not in the table: the
calibration against whole models accounts for them. The runtime's fixed cost of one call (an
Identity graph, key ``null``) is measured too and subtracted from every layer.

Timing is made robust for a shared, noisy machine: every graph is timed in several *rounds*,
each round visiting all graphs in a shuffled order (so a burst of foreign load spreads over many
graphs instead of spoiling one); each round gives a median, which
:func:`~compressor.latency.table.summarize` reduces to one latency.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..progress import progress_bar
from ..runtime import Runtime
from .layers import LayerConfig

NULL_KEY = "null"
_BIG_GRAPH_BYTES = 256 * 2**20  # graphs with more weights are written per measurement, not kept


# ---------------------------------------------------------------------- single-layer graphs
def layer_onnx(config: LayerConfig, cin: int, cout: int, path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a one-layer ONNX graph (input ``input``, output ``logits``, dynamic batch) to ``path``."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    cin, cout = config.channels(cin, cout)
    if config.op == "linear":
        rows = config.in_hw[0]
        w = rng.standard_normal((cin, cout), dtype=np.float32) * np.float32(1.0 / np.sqrt(cin))
        inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(cout, np.float32), "B")]
        nodes = [helper.make_node("MatMul", ["input", "W"], ["mm"]), helper.make_node("Add", ["mm", "B"], ["logits"])]
        dims = ["batch", cin] if rows == 1 else ["batch", rows, cin]
    else:
        groups = cout if config.op == "dwconv" else config.groups
        kh, kw = config.kernel
        w = rng.standard_normal((cout, cin // groups, kh, kw), dtype=np.float32)
        w *= np.float32(1.0 / np.sqrt(max(1, cin // groups * kh * kw)))
        inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(cout, np.float32), "B")]
        nodes = [helper.make_node("Conv", ["input", "W", "B"], ["logits"], kernel_shape=[kh, kw],
                                  strides=list(config.stride), pads=list(config.pads), dilations=list(config.dilation),
                                  group=groups)]
        dims = ["batch", cin, *config.in_hw]
    return _write_graph(nodes, dims, inits, path)


def null_onnx(path: str | os.PathLike) -> Path:
    """An Identity graph on a one-element input: the runtime's fixed cost of one call."""
    from onnx import helper

    return _write_graph([helper.make_node("Identity", ["input"], ["logits"])], ["batch", 1], [], path)


def _write_graph(nodes, dims, inits, path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="compressor-lut")
    model.ir_version = 8
    onnx.save(model, str(path))
    return Path(path)


def layer_module(config: LayerConfig, cin: int, cout: int):
    """The same layer as an ``nn.Module``, for the torch runtimes."""
    from torch import nn

    cin, cout = config.channels(cin, cout)
    if config.op == "linear":
        return nn.Linear(cin, cout)
    groups = cout if config.op == "dwconv" else config.groups
    top, left, bottom, right = config.pads
    conv = nn.Conv2d(cin, cout, config.kernel, config.stride, 0, config.dilation, groups)
    if (top, left) == (bottom, right):
        conv.padding = (top, left)
        return conv
    return nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), conv)


@dataclass
class Probe:
    """One graph to time: its cache key, how to build it, its input shape (without batch)."""

    key: str
    input_shape: tuple[int, ...]
    build_onnx: Callable[[Path], Path]
    build_module: Callable[[], object] | None = None
    weight_bytes: int = 0


def layer_probe(config: LayerConfig, cin: int, cout: int) -> Probe:
    ci, co = config.channels(cin, cout)
    if config.op == "linear":
        nbytes = 4 * ci * co
    else:
        groups = co if config.op == "dwconv" else config.groups
        nbytes = 4 * co * (ci // groups) * config.kernel[0] * config.kernel[1]
    return Probe(config.key(cin, cout), config.input_shape(ci), lambda p: layer_onnx(config, cin, cout, p),
                 lambda: layer_module(config, cin, cout), nbytes)


def null_probe() -> Probe:
    from torch import nn

    return Probe(NULL_KEY, (1,), null_onnx, nn.Identity, 0)


def in_precision(probes: Sequence[Probe], precision: str, recipe: str, batch: int = 1) -> list[Probe]:
    """``probes`` as the graphs of a model deployed in ``precision`` (fp16 or int8 with the
    quantization ``recipe``; fp32: unchanged). The null graph stays as it is: it times a call."""
    if precision == "fp32":
        return list(probes)
    return [p if p.key == NULL_KEY else replace(p, build_onnx=_prepared(p, precision, recipe, batch), build_module=None)
            for p in probes]


def prepare_for_timing(src: Path, dst: Path, precision: str, recipe: str, input_shape: Sequence[int],
                       batch: int = 1) -> Path:
    """``dst``: the fp32 ONNX ``src`` in ``precision``. int8 is calibrated on seeded random inputs:
    they set the scales, not the speed (the deployed model is calibrated on images)."""
    from exporters.precision import prepare_onnx

    calibration = None
    if precision == "int8":
        calibration = [np.random.default_rng(0).standard_normal((max(batch, 4), *input_shape), dtype=np.float32)]
    prepare_onnx(src, dst, precision, recipe, calibration)
    return Path(dst)


def _prepared(probe: Probe, precision: str, recipe: str, batch: int) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        fp32 = probe.build_onnx(path)  # a whole model's probe gives its own file (arch<k>.onnx)
        return prepare_for_timing(fp32, fp32.with_suffix(f".{precision}.onnx"), precision, recipe, probe.input_shape,
                                  batch)
    return build


# ---------------------------------------------------------------------- timing
def measure_probes(runner, probes: Sequence[Probe], *, batch: int, warmup: int, runs: int, rounds: int = 5,
                   seed: int = 0, runtime: Runtime | None = None, desc: str = "latency table") -> list[list[float]]:
    """Time every probe in ``rounds`` shuffled passes; per probe, the median (p50) of each round, in ms.
    A progress bar shows where ``runtime`` (the run's or the command's) is not quiet; none without one.

    ONNX files are written once to a temporary folder (graphs above 256 MiB of weights are written
    anew for each measurement and removed after it); torch runtimes time the module directly.
    """
    use_module = getattr(runner, "runtime", "").startswith("torch-")
    out: list[list[float]] = [[] for _ in probes]
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="compressor-lut-") as tmp, progress_bar(
            len(probes) * rounds, desc=desc, unit="graph", leave=False, quiet=runtime is None or runtime.quiet) as bar:
        paths: dict[int, Path] = {}

        def target(i: int):
            p = probes[i]
            if use_module and p.build_module is not None:
                return p.build_module()
            if i in paths:
                return paths[i]
            path = p.build_onnx(Path(tmp) / f"g{i}.onnx")
            if p.weight_bytes <= _BIG_GRAPH_BYTES:
                paths[i] = path
            return path

        for _ in range(rounds):
            for i in rng.permutation(len(probes)):
                model = target(int(i))
                stats = runner.measure(model, probes[i].input_shape, batch=batch, warmup=warmup, runs=runs)
                out[i].append(float(stats.p50))
                if isinstance(model, Path) and int(i) not in paths:
                    model.unlink(missing_ok=True)
                bar.update(1)
    return out

"""TrtRunner: load (or first build) an engine and time or run it; parity with onnxruntime."""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress_base.errors import CompressError
from exporters.stats import LatencyStats
from exporters.tensorrt.availability import _import_trt, _last_error, _logger, create
from exporters.tensorrt.bindings import TensorSpec, bind, describe_io, random_feed
from exporters.tensorrt.builder import build_engine
from exporters.tensorrt.cuda import make_backend
from exporters.tensorrt.engine_onnx import onnx_precision
from exporters.tensorrt.layers import engine_layers
from exporters.tensorrt.shapes import is_int_at_least, parse_sample_shape, resolve_input_shape
from exporters.tensorrt.timing import assemble_stats, time_engine

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


@dataclass
class _Session:
    path: Path
    engine: Any
    context: Any
    specs: list[TensorSpec] = field(default_factory=list)


class TrtRunner:
    """Times a TensorRT engine; same ``measure`` interface as :class:`exporters.runners.Runner`.

    ``measure(model, ...)`` takes an engine file (``.engine``/``.plan``/``.trt``; default: the
    ``engine_path`` given here), an ONNX file or an ``nn.Module`` (both built first into a
    temporary engine at ``precision``: an fp32 ONNX is made fp16 first; int8 needs an ONNX that
    holds Q/DQ already). :meth:`layers` tells how many layers of the engine last measured run in
    each precision. ``backend`` picks the CUDA buffers: ``"auto"`` (torch if it
    has CUDA, else pycuda), ``"torch"`` or ``"pycuda"``. Use as a context manager or call
    :meth:`close` to release the CUDA context with pycuda.
    """

    runtime = "tensorrt"

    def __init__(self, engine_path=None, backend="auto", device: int = 0, precision: str = "fp16",
                 workspace_mb: int = 1024):
        self.engine_path = Path(engine_path) if engine_path is not None else None
        self._backend_arg = backend
        self.device = device
        self.precision = precision
        self.workspace_mb = workspace_mb
        self._trt = None
        self._backend = None
        self._runtime = None
        self._session: _Session | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    # -- setup -----------------------------------------------------------------------------

    def _setup(self):
        if self._trt is None:
            self._trt = _import_trt(
                "TensorRT is not installed: timing an engine needs tensorrt on the target "
                "(pip install tensorrt, or JetPack's python3-libnvinfer)", purpose="run"
            )
        if self._backend is None:
            self._backend = make_backend(self._backend_arg, self.device)
        return self._trt, self._backend

    def _engine_file(self, model, input_shape, batch: int = 1) -> Path:
        if model is None:
            if self.engine_path is None:
                raise CompressError("no engine given: pass an engine file to TrtRunner or to measure()")
            model = self.engine_path
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if not path.is_file():
                raise CompressError(
                    f"engine file {path} does not exist; build it first with `compress engine MODEL.onnx`"
                )
            if path.suffix.lower() == ".onnx":
                return self._build_temp(path, input_shape, batch)
            return path
        # an nn.Module: export to ONNX first (imports torch, which the caller already has)
        from exporters.onnx_export import export_onnx

        shape = parse_sample_shape(input_shape)
        if shape is None:
            raise CompressError("timing an nn.Module on TensorRT needs its input shape, e.g. (3, 224, 224)")
        tmp = self._tmpdir()
        onnx_path = export_onnx(model, shape, Path(tmp) / "model.onnx")
        return self._build_temp(onnx_path, shape, batch)

    def _tmpdir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="trt-runner-")
        return self._tmp.name

    def _build_temp(self, onnx_path: Path, input_shape, batch: int) -> Path:
        """A throw-away engine for one measurement, its profile fixed at ``batch``."""
        engine = Path(self._tmpdir()) / (onnx_path.stem + ".engine")
        self._drop_session()  # the same temporary path may now hold another model
        precision = self.precision if onnx_precision(onnx_path) == "fp32" else None  # Q/DQ or fp16: as it is
        build_engine(onnx_path, engine, precision=precision, batch=batch, input_shape=input_shape,
                     workspace_mb=self.workspace_mb)
        return engine

    def _drop_session(self) -> None:
        """Release context, then engine (the runtime that made them goes last, in close())."""
        if self._session is not None:
            self._session.context = None
            self._session.engine = None
            self._session = None

    def _open(self, path: Path) -> _Session:
        if self._session is not None and self._session.path == path:
            return self._session
        self._drop_session()
        trt, _ = self._setup()
        logger = _logger(trt)
        if self._runtime is None:
            self._runtime = create(trt, "Runtime", logger)
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise CompressError(
                f"TensorRT {trt.__version__} cannot load {path.name}: {_last_error(logger, 'not a TensorRT engine')}; "
                "engines only load on the TensorRT version and GPU model that built them, so rebuild it here"
            )
        context = engine.create_execution_context()
        if context is None:
            raise CompressError(
                f"TensorRT cannot create an execution context for {path.name}; is the GPU out of memory?"
            )
        self._session = _Session(path, engine, context, describe_io(engine))
        return self._session

    def _prepare(self, model, input_shape, batch: int):
        """The engine file for ``model`` (built first if need be), its session, TensorRT and the backend."""
        path = self._engine_file(model, input_shape, batch)
        session = self._open(path)
        trt, backend = self._setup()
        return path, session, trt, backend

    def _shapes(self, session: _Session, batch, input_shape, default_shape) -> dict:
        inputs = [s for s in session.specs if s.is_input]
        if len(inputs) > 1 and input_shape is not None:
            log.warning("the engine has %d inputs; input_shape applies to the first", len(inputs))
        shapes = {}
        for i, spec in enumerate(inputs):
            shapes[spec.name] = resolve_input_shape(
                spec.name, spec.shape, spec.profile, batch,
                input_shape if i == 0 else None, default_shape if i == 0 else None,
            )
        return shapes

    # -- public ----------------------------------------------------------------------------

    def measure(self, model=None, input_shape=None, batch: int = 1, warmup: int = 10, runs: int = 50,
                default_shape=None, seed: int = 0) -> LatencyStats:
        """Run ``warmup`` untimed then ``runs`` timed inferences on seeded random inputs.

        The input shape comes from the engine where it is static; ``input_shape`` must agree with
        it, ``default_shape`` (e.g. the profile's) only fills dynamic axes.
        """
        if not (is_int_at_least(warmup, 0) and is_int_at_least(runs, 1)):
            raise CompressError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
        path, session, trt, backend = self._prepare(model, input_shape, batch)
        shapes = self._shapes(session, batch, parse_sample_shape(input_shape), default_shape)
        inputs, outputs = bind(session.engine, session.context, backend, shapes)
        for k, b in enumerate(inputs):
            b.host.array[...] = random_feed(b.shape, b.spec.dtype, seed + k)
        times = time_engine(session.context, backend, inputs, outputs, warmup, runs)
        first = inputs[0]
        stats = assemble_stats(
            times["h2d"], times["compute"], times["d2h"], enqueue_ms=times["enqueue"],
            batch=batch, input_shape=first.shape[1:], warmup=warmup,
            device=backend.device_name(),
            versions={"tensorrt": trt.__version__, **backend.versions()},
            settings={
                "engine": path.name,
                "buffers": backend.name,
                "pinned_host_memory": True,
                "io": [
                    {"name": b.spec.name, "mode": "input" if b.spec.is_input else "output",
                     "shape": list(b.shape), "dtype": b.spec.dtype.name}
                    for b in [*inputs, *outputs]
                ],
            },
        )
        log.info(
            "tensorrt: p50 %.3f ms end-to-end (GPU compute p50 %.3f ms), p99 %.3f ms at batch %d (%d runs)",
            stats.p50, stats.settings["gpu_compute_ms"]["p50"], stats.p99, batch, runs,
        )
        return stats

    def layers(self) -> dict:
        """How many layers of the engine last measured or run execute in each precision (its engine
        inspector, at the input shapes of that run; see :func:`~exporters.tensorrt.layers.engine_layers`)."""
        if self._session is None:
            raise CompressError("no engine is open: measure or run one first")
        return engine_layers(self._trt, self._session.engine, self._session.context)

    def infer(self, inputs, model=None) -> dict[str, np.ndarray]:
        """Run the engine once on ``inputs`` (an array for a one-input engine, or name -> array)."""
        first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
        first = np.asarray(first)
        _, session, _, backend = self._prepare(model, first.shape[1:], int(first.shape[0]) if first.ndim else 1)
        names = [s.name for s in session.specs if s.is_input]
        if not isinstance(inputs, dict):
            if len(names) != 1:
                raise CompressError(f"the engine has inputs {names}; pass a dict of arrays by name")
            inputs = {names[0]: inputs}
        missing = set(names) - set(inputs)
        if missing:
            raise CompressError(f"missing engine inputs {sorted(missing)}; pass arrays for {names}")
        shapes = {}
        for spec in session.specs:
            if spec.is_input:
                arr = np.asarray(inputs[spec.name])
                shapes[spec.name] = resolve_input_shape(
                    spec.name, spec.shape, spec.profile, int(arr.shape[0]), arr.shape[1:]
                )
        ins, outs = bind(session.engine, session.context, backend, shapes)
        for b in ins:
            b.host.array[...] = np.asarray(inputs[b.spec.name]).astype(b.spec.dtype, copy=False)
        time_engine(session.context, backend, ins, outs, 0, 1)
        return {b.spec.name: np.array(b.host.array, copy=True) for b in outs}

    def close(self) -> None:
        self._drop_session()
        self._runtime = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> TrtRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def compare_with_onnxruntime(engine_path, onnx_path, batch: int = 2, input_shape=None, seed: int = 0,
                             backend="auto") -> dict:
    """Max absolute difference between the engine and onnxruntime (CPU) on one random batch.

    Returns ``{"max_abs_diff", "batch", "output"}`` for the first output.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    dims = [d if isinstance(d, int) else -1 for d in inp.shape]
    shape = resolve_input_shape(inp.name, dims, None, batch, parse_sample_shape(input_shape))
    x = random_feed(shape, np.float32, seed)
    want = session.run(None, {inp.name: x})[0]
    with TrtRunner(engine_path, backend=backend) as runner:
        got_all = runner.infer({inp.name: x})
    out_name = session.get_outputs()[0].name
    got = got_all.get(out_name, next(iter(got_all.values())))
    if got.shape != want.shape:
        raise CompressError(
            f"engine output shape {got.shape} differs from onnxruntime's {want.shape}; rebuild the engine"
        )
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    log.info("max |tensorrt - onnxruntime| = %.3g at batch %d", diff, batch)
    return {"max_abs_diff": diff, "batch": batch, "output": out_name}

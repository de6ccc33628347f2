"""``compress bench MODEL --target PROFILE``: time an ONNX file or a TensorRT engine on this machine.

The runner follows the file type and the profile (:func:`exporters.runtime_choice.choose_runtime`):
a ``.engine`` (``.plan``, ``.trt``) file runs on TensorRT; a ``.onnx`` file on the first onnxruntime
runtime of the profile's ``runtimes`` list whose execution provider this onnxruntime has. The result
is plain data (latency statistics, the profile's name and notes, the model file's name and SHA-256,
and what this host is: board, L4T release, power mode, CPU governor) so figures from different
boards can be compared and traced.

Neither path imports torch: a Jetson with TensorRT and pycuda but no PyTorch can bench engines,
and a board with onnxruntime alone (a Raspberry Pi) can bench ONNX files.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from compress_base.errors import CompressError
from compress_base.fileio import cannot_write, write_json
from exporters.inputs import check_input_size
from exporters.runtime_choice import choose_runtime
from exporters.tensorrt import ENGINE_SUFFIXES, parse_sample_shape
from profiles import cpu_name

log = logging.getLogger(__name__)

BENCH_FORMAT = 1


def model_format(path: Path) -> str:
    """``"onnx"`` or ``"engine"`` from the file suffix; anything else is a user error."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    raise CompressError(
        f"cannot bench {path.name}: give an ONNX file (.onnx) or a TensorRT engine "
        f"({', '.join(ENGINE_SUFFIXES)})"
    )


def resolve_onnx_shape(
    name: str, dims: Sequence, batch: int, input_shape: Sequence[int] | None, profile_shape: Sequence[int]
) -> tuple[int, ...]:
    """The sample shape (without batch) at which an ONNX model is timed.

    ``dims`` is the model input's shape as onnxruntime reports it (ints, or names/None for dynamic
    axes). Static model axes win; an explicit ``input_shape`` must agree with them; the profile's
    shape fills dynamic axes.
    """
    dims = [d if isinstance(d, int) and d > 0 else -1 for d in dims]
    if not dims:
        raise CompressError(f"{name} has a scalar input; bench needs a batched image input")
    if dims[0] > 0 and dims[0] != batch:
        raise CompressError(
            f"{name} has a fixed batch of {dims[0]}, not {batch}; bench with --batch {dims[0]} or "
            "re-export the model with a dynamic batch axis"
        )
    sample = dims[1:]
    if input_shape is not None:
        given = tuple(input_shape)
        static = all(d > 0 for d in sample)
        if len(given) != len(sample) or any(d > 0 and d != g for d, g in zip(sample, given)):
            have = "x".join(str(d) if d > 0 else "?" for d in sample)
            raise CompressError(
                f"{name} takes inputs of {have}, not the input shape {'x'.join(map(str, given))}; "
                + ("drop --input-shape" if static else "give a matching --input-shape")
                + " or re-export the model at that shape"
            )
        return given
    if all(d > 0 for d in sample):
        return tuple(sample)
    if len(profile_shape) != len(sample) or any(d > 0 and d != p for d, p in zip(sample, profile_shape)):
        raise CompressError(
            f"{name} has dynamic input axes that the profile's shape {'x'.join(map(str, profile_shape))} "
            "does not fit; pass --input-shape"
        )
    return tuple(profile_shape)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Host description
# --------------------------------------------------------------------------------------------


def parse_l4t_release(text: str) -> str | None:
    """``"# R36 (release), REVISION: 4.3, ..."`` (/etc/nv_tegra_release) -> ``"36.4.3"``."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def parse_nvpmodel(text: str) -> dict | None:
    """``nvpmodel -q`` output (``NV Power Mode: MAXN`` then the id) -> ``{"name", "id"}``."""
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    if not m:
        return None
    ids = [line.strip() for line in text.splitlines() if line.strip().isdigit()]
    return {"name": m.group(1), "id": int(ids[-1]) if ids else None}


def _run_quiet(cmd: Sequence[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def host_info(root: str | os.PathLike = "/", run: Callable[[Sequence[str]], str | None] = _run_quiet) -> dict:
    """What this machine is, for reproducing a figure: OS, CPU, board and power settings.

    Board keys appear only where the machine has them: ``board`` (device-tree model: Jetson,
    Raspberry Pi), ``l4t`` (Jetson Linux release), ``nvpmodel`` (Jetson power mode),
    ``cpu_governor``/``cpu_max_mhz``, ``throttled`` (Raspberry Pi ``vcgencmd get_throttled``).
    """
    root = Path(root)
    info = {
        "hostname": platform.node(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
    }
    board = _read(root, "proc/device-tree/model")
    if board:
        info["board"] = board
    release = _read(root, "etc/nv_tegra_release")
    if release and parse_l4t_release(release):
        info["l4t"] = parse_l4t_release(release)
        out = run(["nvpmodel", "-q"])
        mode = parse_nvpmodel(out) if out else None
        if mode:
            info["nvpmodel"] = mode
    governor = _read(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if governor:
        info["cpu_governor"] = governor
    max_khz = _read(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq")
    if max_khz and max_khz.isdigit():
        info["cpu_max_mhz"] = int(max_khz) // 1000
    if board and board.startswith("Raspberry Pi"):
        out = run(["vcgencmd", "get_throttled"])
        if out and "=" in out:
            info["throttled"] = out.strip().split("=", 1)[1]
    return info


# --------------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------------


def _onnx_input(path: Path) -> tuple[str, list]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        raise CompressError(
            f"onnxruntime cannot load {path}: {lines[0] if lines else type(exc).__name__}; re-export the model"
        ) from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise CompressError(f"{path.name} has {len(inputs)} inputs; bench times single-input image models")
    return inputs[0].name, list(inputs[0].shape)


def _positive(name: str, value, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise CompressError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _measure(path: Path, fmt: str, profile, runtime: str | None, shape: tuple[int, ...] | None, *, batch: int,
             warmup: int, runs: int, threads: int, backend: str):
    """The runtime chosen for ``path``, its latency statistics and, for an engine, its layers per
    precision (TensorRT's engine inspector at the timed shapes; None for ONNX)."""
    layers = None
    if fmt == "engine":
        chosen = choose_runtime(profile, fmt, runtime)
        from exporters.tensorrt import TrtRunner

        with TrtRunner(path, backend=backend) as runner:
            stats = runner.measure(path, shape, batch=batch, warmup=warmup, runs=runs,
                                   default_shape=profile.input_shape)
            layers = runner.layers()
    else:
        import onnxruntime as ort

        from exporters.runners import ORT_PROVIDERS, make_runner

        have = ort.get_available_providers()
        available = [name for name, providers in ORT_PROVIDERS.items() if providers[0] in have]
        chosen = choose_runtime(profile, fmt, runtime, available)
        name, dims = _onnx_input(path)
        sample = resolve_onnx_shape(path.name, dims, batch, shape, profile.input_shape)
        check_input_size(sample, batch, path.name)
        stats = make_runner(chosen, threads).measure(path, sample, batch=batch, warmup=warmup, runs=runs)
    return chosen, stats, layers


def _record(path: Path, fmt: str, profile, chosen: str, stats, layers: dict | None = None) -> dict:
    """The bench result: what was timed (an ONNX file's own metadata included: input shape, class
    names, preprocessing, precision; an engine's layers per precision as ``engine_layers``), for
    which profile, on what, and the figures."""
    metadata = None
    if fmt == "onnx":
        from exporters.onnx_eval import deployment_info

        metadata = deployment_info(path)
    record = {
        "format": BENCH_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "file": path.name,
            "path": str(path.resolve()),
            "format": fmt,
            "bytes": path.stat().st_size,
            "sha256": file_sha256(path),
            "metadata": metadata,
        },
        "profile": {
            "name": profile.name,
            "description": profile.description,
            "device": profile.device,
            "precision": profile.precision,
            "source": profile.source,
            "notes": dict(profile.notes),
        },
        "runtime": chosen,
        "stats": stats.to_dict(),
        "host": host_info(),
    }
    if layers is not None:
        record["engine_layers"] = layers
    return record


def bench(
    model_path,
    profile,
    runtime: str | None = None,
    batch: int | None = None,
    warmup: int | None = None,
    runs: int | None = None,
    input_shape: Sequence[int] | None = None,
    threads: int | None = None,
    backend: str = "auto",
) -> dict:
    """Time ``model_path`` (.onnx or .engine) for ``profile`` (a Profile, name or TOML path).

    ``batch``, ``warmup``, ``runs``, ``threads`` default to the profile's; ``input_shape`` (C, H, W)
    defaults to the model's own static shape, else the profile's. Returns a JSON-able dict with
    ``model`` (file, sha256, bytes, format), ``profile`` (name, notes, ...), ``runtime``,
    ``stats`` (LatencyStats.to_dict), ``host`` and ``created``.
    """
    from profiles import Profile, host_model, load_profile

    if not isinstance(profile, Profile):
        profile = load_profile(str(profile))
    if not profile.runs_here():
        raise CompressError(
            f"profile {profile.name!r} is for a {profile.host_model} board, and this machine is "
            f"{host_model()!r}: run compress bench on the board"
        )
    path = Path(model_path)
    fmt = model_format(path)
    if not path.is_file():
        raise CompressError(f"model file {path} does not exist; give the path of an .onnx or .engine file "
                            "(compress run writes model.onnx)")
    _positive("batch", batch, 1)
    _positive("warmup", warmup, 0)
    _positive("runs", runs, 1)
    _positive("threads", threads, 0)
    batch = profile.batch if batch is None else batch
    warmup = profile.measure.warmup if warmup is None else warmup
    runs = profile.measure.runs if runs is None else runs
    threads = profile.measure.threads if threads is None else threads
    shape = parse_sample_shape(input_shape)

    chosen, stats, layers = _measure(path, fmt, profile, runtime, shape, batch=batch, warmup=warmup, runs=runs,
                                     threads=threads, backend=backend)
    log.info("%s on %s (%s): p50 %.3f ms, p99 %.3f ms", path.name, profile.name, chosen, stats.p50, stats.p99)
    return _record(path, fmt, profile, chosen, stats, layers)


def write_bench(result: dict, out_path) -> Path:
    """Write a bench result as indented JSON, atomically (temporary name, then rename); a path that
    cannot be written is a CompressError."""
    try:
        return write_json(out_path, result)
    except OSError as exc:
        raise cannot_write(out_path, exc) from None


def format_bench(result: dict) -> str:
    """One line for the terminal: file, target, runtime, percentiles, throughput."""
    s = result["stats"]
    line = (
        f"{result['model']['file']} on {result['profile']['name']} ({result['runtime']}, {s['device']}): "
        f"p50 {s['p50']:.3f} ms, p90 {s['p90']:.3f} ms, p99 {s['p99']:.3f} ms"
    )
    compute = s.get("settings", {}).get("gpu_compute_ms")
    if compute:
        line += f" (GPU compute p50 {compute['p50']:.3f} ms)"
    line += f", {s['throughput']:.1f} inferences/s at batch {s['batch']}"
    meta = result["model"].get("metadata") or {}
    if meta.get("precision") or meta.get("class_names"):
        classes = meta.get("class_names")
        line += (f"; the file says: {meta.get('precision', 'precision not given')}, "
                 f"{len(classes) if isinstance(classes, list) else 'no'} class names")
    if result.get("engine_layers"):
        from exporters.tensorrt import format_layers

        line += f"; {format_layers(result['engine_layers'])}"
    return line


__all__ = [
    "bench",
    "file_sha256",
    "format_bench",
    "host_info",
    "model_format",
    "parse_l4t_release",
    "parse_nvpmodel",
    "resolve_onnx_shape",
    "write_bench",
]

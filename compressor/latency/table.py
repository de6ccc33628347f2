"""The on-disk latency table: measured latency of single layers on one target, keyed by layer config.

A table belongs to one *profile* (``cpu``, ``jetson-orin-nano``, ...) measured on one *hardware*
(device name, runtime and its version, threads, batch, precision, clock, channel block). Its
``entries`` map a layer key (:meth:`LayerConfig.key`: operator, kernel, stride, padding,
dilation, groups, input size, batch, C_in x C_out) to a latency in ms, so measurements are
shared by every model that has the same layer. ``calibrations`` hold, per model fingerprint,
the whole-model measurements and the fitted coefficients (see :mod:`.calibration`).

A table *file* (format 2) holds several tables, one per profile and hardware, so that one cache
file serves the same machine seen through different CPU affinities. Runs that share a file
merge into it under an exclusive lock (:meth:`LatencyTable.save`); values read back are checked
(latencies finite and not negative).

The graphs measured and how they are timed are in :mod:`.probes`: each in several shuffled
rounds, the rounds' medians reduced here by :func:`summarize`, ``min`` (default: the quietest
round, as foreign load only ever adds time) or ``median``. With ``clock="cpu"`` (onnxruntime-cpu,
one thread) runs are timed by the thread's CPU time
(:class:`exporters.runners.CpuClockOrtRunner`), which leaves out the time the thread waited for a core.
The runtime is chosen by :func:`exporters.runtime_choice.choose_runtime`, the runner made by
:func:`exporters.runners.make_runner`.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import platform
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from compress_base.errors import CompressError
from compress_base.fileio import write_text
from profiles import cpu_name

log = logging.getLogger(__name__)

FORMAT = 2
KIND = "compressor-latency-table"
_HW_KEYS = ("device", "runtime", "runtime_version", "threads", "batch", "precision", "clock", "channel_block")


# ---------------------------------------------------------------------- hardware
def _on_gpu(runtime: str) -> bool:
    return runtime in ("tensorrt", "onnxruntime-cuda", "onnxruntime-tensorrt", "torch-cuda")


def channel_block(runtime: str, channel_multiple: int = 8) -> int:
    """The channel count a runtime pads to (its vector block), which makes latency a staircase in channels.

    onnxruntime's CPU provider on x86 runs convolutions in its NCHWc layout, whose block is 16
    floats with AVX-512 and 8 with AVX2 (MLAS); elsewhere the profile's channel multiple is used.
    """
    if runtime == "onnxruntime-cpu" and platform.machine().lower() in ("x86_64", "amd64"):
        try:
            flags = set()
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
        except OSError:
            flags = set()
        if "avx512f" in flags:
            return 16
        if "avx2" in flags:
            return 8
    return max(1, int(channel_multiple))


def graph_precision(runtime: str) -> bool:
    """Whether ``runtime`` runs a model in the precision its ONNX graph is written in (onnxruntime),
    so that the table's graphs are rewritten in the deployed precision before they are timed."""
    return runtime.startswith("onnxruntime")


def hardware_fingerprint(runtime: str, threads: int = 0, batch: int = 1, precision: str = "fp32",
                         clock: str = "wall", block: int = 1) -> dict:
    """What a measurement depends on besides the layer: device, runtime + version, threads, batch,
    precision, clock. The precision is the deployed one where the runtime times it (a GPU runtime,
    or onnxruntime on graphs rewritten in it); torch on the CPU times fp32."""
    if _on_gpu(runtime):
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "unknown gpu"
    else:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:
            cpus = os.cpu_count() or 1
        device = f"{cpu_name()} ({cpus} cpus)"
    if runtime.startswith("onnxruntime"):
        version = ort.__version__
    elif runtime == "tensorrt":
        import tensorrt  # noqa: F401 - only reached when choose_runtime found it usable

        version = tensorrt.__version__
    else:
        import torch

        version = torch.__version__
        if runtime == "torch-cpu":
            threads = torch.get_num_threads()
    return {"device": device, "runtime": runtime, "runtime_version": version, "threads": int(threads),
            "batch": int(batch), "precision": precision if _on_gpu(runtime) or graph_precision(runtime) else "fp32",
            "clock": clock,
            "channel_block": int(block)}


def describe_hardware(hw: dict) -> str:
    return (f"{hw.get('device', '?')} with {hw.get('runtime', '?')} {hw.get('runtime_version', '')} "
            f"({hw.get('threads', 0)} threads, batch {hw.get('batch', 1)}, {hw.get('precision', 'fp32')}, "
            f"{hw.get('clock', 'wall')} clock)")


# ---------------------------------------------------------------------- the table
def summarize(rounds: Sequence[float], stat: str = "min") -> float:
    """One latency from the rounds' medians: ``"min"`` (the quietest round: foreign load only ever
    adds time, so the lowest median is the most repeatable estimate on a shared machine) or
    ``"median"``."""
    if stat == "min":
        return float(np.min(rounds))
    if stat == "median":
        return float(np.median(rounds))
    raise ValueError(f"unknown statistic {stat!r}: use min or median")


@dataclass
class LatencyTable:
    """Measured single-layer latencies of one profile on one hardware (see the module docstring)."""

    profile: str
    hardware: dict
    entries: dict[str, dict] = field(default_factory=dict)  # key -> {"ms": median, "rounds": [...]}
    calibrations: dict[str, dict] = field(default_factory=dict)  # model fingerprint -> fit and points
    settings: dict = field(default_factory=dict)  # warmup, runs, rounds of the measurements
    source: str = ""

    def ms(self, key: str) -> float:
        return float(self.entries[key]["ms"])

    def missing(self, keys) -> list[str]:
        """Keys not measured yet, in first-seen order without repeats."""
        return [k for k in dict.fromkeys(keys) if k not in self.entries]

    def add(self, key: str, rounds: Sequence[float], stat: str = "min") -> None:
        self.entries[key] = {"ms": round(summarize(rounds, stat), 6), "rounds": [round(float(r), 6) for r in rounds]}

    def matches(self, profile: str, hardware: dict | None = None) -> bool:
        """Measured for ``profile`` and, if given, ``hardware`` (the fields a measurement depends on)."""
        return self.profile == profile and (hardware is None or _hw_key(self.hardware) == _hw_key(hardware))

    def describe(self) -> str:
        return f"profile {self.profile} on {describe_hardware(self.hardware)}"

    # ------------------------------------------------------------------ one table of a file
    def to_section(self) -> dict:
        return {"profile": self.profile, "hardware": dict(self.hardware), "settings": dict(self.settings),
                "entries": dict(sorted(self.entries.items())), "calibrations": dict(self.calibrations)}

    @classmethod
    def from_section(cls, data: dict, source: str = "latency table") -> LatencyTable:
        """One table of a file, its values checked (latencies finite and not negative)."""
        try:
            entries = {str(k): _valid_entry(v, f"latency for '{k}'", source) for k, v in data["entries"].items()}
            calibrations = {str(k): _valid_calibration(v, f"calibration of '{k}'", source)
                            for k, v in data.get("calibrations", {}).items()}
            return cls(str(data["profile"]), _valid_hardware(data["hardware"], source), entries, calibrations,
                       _valid_settings(data.get("settings", {}), source), source)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CompressError(f"{source} is a damaged latency table: build it again with `compress lut`") from None

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        """A table file holding this table only."""
        return tables_to_dict([self])

    def save(self, path: str | os.PathLike) -> Path:
        """Write this table into the file at ``path``, atomically, merged with what the file holds
        at that moment, under an exclusive lock (so that concurrent writers lose nothing).

        The file's tables for other profiles or hardware are kept. In the table for this profile
        and hardware, a layer the file already holds keeps the file's value (a measurement once
        saved is never replaced, so the calibrations fitted on it stay consistent), the others
        are added; this table's calibrations replace the file's for the same model.
        """
        path = Path(path)
        try:
            with _locked(path):
                tables = read_tables(path) if path.exists() else []
                text = json.dumps(tables_to_dict(_merged(tables, self)), indent=2, allow_nan=False)
                write_text(path, text + "\n")
        except OSError as exc:
            raise CompressError(f"cannot write the latency table {path} ({_why(exc, path)}): free space there or name "
                                "another file (--latency-table; --out for compress lut)") from None
        self.source = str(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, profile: str | None = None, hardware: dict | None = None) -> LatencyTable:
        """The file's (first) table for ``profile`` and ``hardware`` where given; refuse a file that has none."""
        return tables_for(read_tables(path), profile, hardware, str(path))[0]


def tables_to_dict(tables: Sequence[LatencyTable]) -> dict:
    """The file format: several tables, one per profile and hardware."""
    return {"format": FORMAT, "kind": KIND, "tables": [t.to_section() for t in tables]}


def parse_tables(data, source: str = "latency table") -> list[LatencyTable]:
    """The tables of a file's contents (format 2, or format 1: one table at the top level)."""
    if not isinstance(data, dict) or data.get("kind") != KIND or data.get("format") not in (1, FORMAT):
        raise CompressError(f"{source} is not a latency table of format {FORMAT}: build one with `compress lut`")
    sections = [data] if data["format"] == 1 else data.get("tables")
    if not isinstance(sections, list) or not all(isinstance(s, dict) for s in sections):
        raise CompressError(f"{source} is a damaged latency table: build it again with `compress lut`")
    return [LatencyTable.from_section(s, source) for s in sections]


def read_tables(path: str | os.PathLike) -> list[LatencyTable]:
    """Every table of the file at ``path``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CompressError(f"latency table {path} does not exist: build one with `compress lut`") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CompressError(f"cannot read latency table {path} ({type(exc).__name__}): build it again with "
                            "`compress lut`") from None
    return parse_tables(data, str(path))


def tables_for(tables: Sequence[LatencyTable], profile: str | None, hardware: dict | None = None,
               source: str = "(in memory)") -> list[LatencyTable]:
    """The tables measured for ``profile`` (all, if None) and ``hardware`` (if given); refuse when none is."""
    found = [t for t in tables if profile is None or t.matches(profile, hardware)]
    if found:
        return found
    held = "; ".join(t.describe() for t in tables) or "nothing"
    where = f" on {describe_hardware(hardware)}" if hardware is not None else ""
    raise CompressError(f"latency table {source} was measured for {held}, not for {profile}{where}: build one with "
                        f"`compress lut --target {profile}`")


def _why(exc: OSError, path: Path) -> str:
    """The reason of an OSError, naming the file it concerns unless that lies next to ``path``
    (the table, its lock or temporary file), e.g. a file standing where a folder should be."""
    reason = exc.strerror or type(exc).__name__
    if exc.filename and Path(exc.filename).parent != path.parent:
        reason += f": {exc.filename}"
    return reason


def _hw_key(hardware: dict) -> dict:
    return {k: hardware.get(k) for k in _HW_KEYS}


def _merged(tables: list[LatencyTable], mine: LatencyTable) -> list[LatencyTable]:
    """``tables`` (a file's) with ``mine`` merged in as :meth:`LatencyTable.save` says."""
    for i, t in enumerate(tables):
        if t.matches(mine.profile, mine.hardware):
            tables[i] = LatencyTable(t.profile, t.hardware, {**mine.entries, **t.entries},
                                     {**t.calibrations, **mine.calibrations}, mine.settings or t.settings)
            return tables
    return [*tables, mine]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the sidecar file ``<path>.lock`` (kept afterwards: removing it would race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


# ---------------------------------------------------------------------- checking values read back
def _number(value, what: str, source: str, low: float | None = 0.0, *, above: bool = False,
            whole: bool = False) -> float:
    """``value`` as a float, refused unless finite, >= ``low`` (> with ``above``; no bound if None)
    and, with ``whole``, an integer."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or (value > low if above else value >= low)) and (not whole or float(value).is_integer())
    if not ok:
        need = ("a whole number" if whole else "a finite number") + ("" if low is None else
                                                                      f" {'>' if above else '>='} {low:g}")
        raise CompressError(f"latency table {source} holds an invalid {what} ({value!r}; need {need}): build it "
                            "again with `compress lut`")
    return float(value)


def _valid_entry(value: dict, what: str, source: str) -> dict:
    return {"ms": _number(value["ms"], what, source),
            "rounds": [_number(x, what, source) for x in value.get("rounds", [])]}


def _valid_calibration(cal: dict, what: str, source: str) -> dict:
    """A model's calibration: ``a`` > 0, ``c_ms_per_mb`` >= 0, ``b`` finite, ``grid`` and ``archs``
    whole, each point's figures finite and not negative."""
    limits = {"a": 0.0, "c_ms_per_mb": 0.0, "b": None, "grid": 1, "archs": 0, "null_ms": 0.0}
    for name, low in limits.items():
        if name in cal:
            _number(cal[name], f"{name} in the {what}", source, low, above=name == "a",
                    whole=name in ("grid", "archs"))
    for point in cal.get("points", []):
        for name in ("raw", "weight_mb", "ms"):
            if name in point:
                _number(point[name], f"{name} of a point in the {what}", source, 0.0, above=name == "ms")
    return dict(cal)


def _valid_hardware(hw: dict, source: str) -> dict:
    for name, low in (("threads", 0), ("batch", 1), ("channel_block", 1)):
        if name in hw:
            _number(hw[name], f"hardware {name}", source, low, whole=True)
    return dict(hw)


def _valid_settings(settings: dict, source: str) -> dict:
    for name, low in (("warmup", 0), ("runs", 1), ("rounds", 1), ("grid", 1)):
        if name in settings:
            _number(settings[name], f"setting {name}", source, low, whole=True)
    return dict(settings)

"""Target profiles: TOML files describing a deployment target, and their loader.

A profile names the device kind, the runtimes to try in order, precision (and the int8 quantization
recipe its runtime wants), batch, the default deployment input shape, the channel multiple a search
rounds widths to, and how to measure.
``--target`` takes a profile name (a TOML file in this folder) or a path to the user's own TOML.
"""
from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

from compress_base.errors import CompressError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (JetPack 6): the same parser, packaged as tomli
    import tomli as tomllib

PROFILE_DIR = Path(__file__).resolve().parent
_DEVICES = ("cpu", "gpu")
_PRECISIONS = ("fp32", "fp16", "int8")
# How int8 is quantized for the target's runtime (exporters.precision): TensorRT's explicit Q/DQ format
# (symmetric s8 activations and weights) or the one onnxruntime's CPU kernels run fast (u8 activations)
QUANTIZATIONS = ("tensorrt", "onnxruntime")
# A profile name becomes part of file names (latency-<name>.json, <model>.<name>.bench.json)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


@dataclass(frozen=True)
class Measure:
    """How latency is measured on the target."""

    warmup: int = 10
    runs: int = 50
    threads: int = 0


@dataclass(frozen=True)
class Profile:
    """One deployment target."""

    name: str
    description: str
    device: str
    runtimes: tuple[str, ...]
    precision: str
    batch: int
    input_shape: tuple[int, int, int]
    channel_multiple: int
    measure: Measure = field(default_factory=Measure)
    notes: dict = field(default_factory=dict)
    source: str = ""
    host_model: str | None = None  # text this machine's model name must contain to measure here
    quantization: str = "onnxruntime"  # the int8 recipe (QUANTIZATIONS); a TOML without it: by device

    def runs_here(self) -> bool:
        """Whether this machine is the profile's device (always, for a generic profile)."""
        return self.host_model is None or self.host_model.lower() in host_model().lower()

    def to_dict(self) -> dict:
        """Plain-data view for reports."""
        return {
            "name": self.name,
            "description": self.description,
            "device": self.device,
            "runtimes": list(self.runtimes),
            "precision": self.precision,
            "quantization": self.quantization,
            "batch": self.batch,
            "input_shape": list(self.input_shape),
            "channel_multiple": self.channel_multiple,
            "measure": vars(self.measure).copy(),
            "notes": dict(self.notes),
            "source": self.source,
            "host_model": self.host_model,
        }


def host_model() -> str:
    """This machine's model: the device-tree model on boards (Jetson, Raspberry Pi), else the CPU name."""
    tree = Path("/proc/device-tree/model")
    if tree.is_file():
        return tree.read_bytes().rstrip(b"\x00").decode(errors="replace").strip()
    return cpu_name()


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def list_profiles() -> list[str]:
    """Names of the profiles shipped with the package."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def _field(data: dict, key: str, kind, where: str, default=None):
    if key not in data:
        if default is not None:
            return default
        raise CompressError(f"profile {where}: field '{key}' is missing; add it to the TOML file")
    value = data[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise CompressError(f"profile {where}: field '{key}' must be an integer, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise CompressError(f"profile {where}: field '{key}' must be a string, got {value!r}")
    if kind is list and not isinstance(value, list):
        raise CompressError(f"profile {where}: field '{key}' must be a list, got {value!r}")
    if kind is dict and not isinstance(value, dict):
        raise CompressError(f"profile {where}: field '{key}' must be a table, got {value!r}")
    return value


def _check_name(name: str, where: str) -> None:
    """Refuse a name that would not be a plain file-name part (a path separator, ``..``)."""
    if not re.fullmatch(NAME_PATTERN, name) or ".." in name:
        raise CompressError(
            f"profile {where}: field 'name' {name!r} is not a safe name; use letters, digits, '.', '_' "
            f"and '-' (pattern {NAME_PATTERN}, no '..')"
        )


def parse_profile(data: dict, where: str) -> Profile:
    """Validate a profile's TOML data; every problem is a CompressError naming the field."""
    name = _field(data, "name", str, where)
    _check_name(name, where)
    device = _field(data, "device", str, where)
    if device not in _DEVICES:
        raise CompressError(f"profile {where}: field 'device' must be one of {_DEVICES}, got {device!r}")
    runtimes = _field(data, "runtimes", list, where)
    if not runtimes or not all(isinstance(r, str) for r in runtimes):
        raise CompressError(f"profile {where}: field 'runtimes' must be a non-empty list of names")
    precision = _field(data, "precision", str, where, "fp32")
    if precision not in _PRECISIONS:
        raise CompressError(
            f"profile {where}: field 'precision' must be one of {_PRECISIONS}, got {precision!r}"
        )
    quantization = _field(data, "quantization", str, where, "tensorrt" if device == "gpu" else "onnxruntime")
    if quantization not in QUANTIZATIONS:
        raise CompressError(
            f"profile {where}: field 'quantization' must be one of {QUANTIZATIONS}, got {quantization!r}"
        )
    batch = _field(data, "batch", int, where, 1)
    shape = _field(data, "input_shape", list, where)
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise CompressError(
            f"profile {where}: field 'input_shape' must be three positive integers [C, H, W]"
        )
    multiple = _field(data, "channel_multiple", int, where, 1)
    if batch < 1 or multiple < 1:
        raise CompressError(f"profile {where}: fields 'batch' and 'channel_multiple' must be >= 1")
    m = _field(data, "measure", dict, where, {})
    unknown = set(m) - {"warmup", "runs", "threads"}
    if unknown:
        raise CompressError(f"profile {where}: unknown field 'measure.{sorted(unknown)[0]}'")
    for key in m:
        if isinstance(m[key], bool) or not isinstance(m[key], int) or m[key] < 0:
            raise CompressError(f"profile {where}: field 'measure.{key}' must be a non-negative integer")
    if m.get("runs", 1) < 1:
        raise CompressError(f"profile {where}: field 'measure.runs' must be at least 1")
    return Profile(
        name=name,
        description=str(data.get("description", "")),
        device=device,
        runtimes=tuple(runtimes),
        precision=precision,
        batch=batch,
        input_shape=tuple(shape),
        channel_multiple=multiple,
        measure=Measure(**m),
        notes=dict(_field(data, "notes", dict, where, {})),
        source=where,
        host_model=_field(data, "host_model", str, where, "") or None,
        quantization=quantization,
    )


def load_profile(target: str) -> Profile:
    """Load a shipped profile by name, or a user's TOML file by path."""
    path = Path(target)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise CompressError(f"profile file {target!r} does not exist: give a path to a TOML file")
    else:
        path = PROFILE_DIR / f"{target}.toml"
        if not path.is_file():
            raise CompressError(
                f"unknown target {target!r}: use one of {', '.join(list_profiles())} "
                "or a path to a profile TOML file"
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CompressError(f"profile {path} is not valid TOML ({exc}); fix the file") from None
    return parse_profile(data, str(path))

"""A run's settings (:class:`RunConfig`): their types and ranges, checked in one place, and how they
are read back from a run directory's ``run.json`` by ``--resume``.

A settings file is data from disk: every value is type- and range-checked before use, and the
fields that name files (data, weights, latency table, profile) are trusted only inside the run
directory or when given again on the command line (see ``docs/SECURITY.md``).
"""
from __future__ import annotations

import math
import re
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from compress_base.errors import CompressError

from .budget import Budget
from .rundir import STATE_DIR, read_settings
from .units import parse_shape

NAS_METHOD = "autoshrink-cell"  # the method of a `compress nas` run (a ShrinkCNN cell searched from scratch)
PRECISIONS = ("fp32", "fp16", "int8")  # what a run can ship (--precision)
MAX_SEED = 2**32 - 1  # numpy's seed range
IN_MEMORY = ("model", "data")  # what a compressor.compress() call may hold in memory (setting in_memory)
# settings that name files, with the command-line option that gives them again on --resume
PATH_FIELDS = {"data": "--data", "weights": "--weights", "latency_table": "--latency-table", "target": "--target"}
# a settings file never grants trust, nor imports from the current directory
_NOT_SAVED = ("budget", "resume", "trust_code", "search_cwd")
_BUDGET_KEYS = {"macs", "params", "latency_ms", "macs_fraction", "params_fraction"}  # Budget.to_dict's
_WEIGHTS_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")  # a torchvision weights name (DEFAULT, IMAGENET1K_V2)


@dataclass
class RunConfig:
    """Everything one run needs; the CLI fills it from its options. Checked when made."""

    budget: Budget
    model: str = "resnet18"
    weights: str | None = None
    num_classes: int | None = None
    data: str | None = None
    target: str = "cpu"
    input_shape: str | None = None
    train_resolution: int = 32  # the search's proxy resolution (and everything's, in the digits demo)
    eval_resolution: int | None = None  # teacher, fine-tuning, evaluation; None: the policy (resolution.py)
    method: str = "greedy"
    epochs: int = 5
    teacher_epochs: int = 5
    search_epochs: int = 5
    from_scratch: bool = False
    options: dict | None = None
    latency_table: str | None = None
    resume: bool = False
    batch_size: int = 64
    lr: float = 0.05
    kd_lambda: float = 0.9
    temperature: float = 4.0
    out: str | None = None
    overwrite: bool = False
    seed: int = 0
    device: str | None = None
    quiet: bool = False
    latency_runs: int | None = None
    workers: int | None = None  # DataLoader worker processes; None: from the cores
    amp: bool = True  # mixed precision on CUDA
    trust_code: bool = False  # --resume may import the user-code model named in run.json
    search_cwd: bool = False  # the model's module may come from the current directory (the user typed --model)
    keep: list[str] | None = None  # layers left unpruned: module names or fnmatch patterns (--keep)
    precision: str | None = None  # what ships: fp32, fp16 or int8; None: the target profile's
    calibration_images: int = 256  # training images that calibrate int8 quantization
    warn_accuracy_drop: float = 1.0  # accuracy points lost (to the original, or to fp32) that make a warning
    in_memory: list[str] | None = None  # what a compressor.compress() call held in memory: "model", "data"

    def __post_init__(self):
        check_config(self)

    def settings(self) -> dict:
        """The settings as saved in ``run.json`` and in the report (no budget, no trust)."""
        return {k: v for k, v in asdict(self).items() if k not in _NOT_SAVED}


# (lowest, highest) of the numeric settings; None: unbounded on that side
_RANGES = {
    "num_classes": (2, 100_000), "train_resolution": (8, 4096), "eval_resolution": (8, 4096), "workers": (0, 64),
    "epochs": (0, 100_000), "teacher_epochs": (0, 100_000), "search_epochs": (1, 100_000), "batch_size": (2, 1 << 20),
    "seed": (0, MAX_SEED), "latency_runs": (1, 1_000_000), "lr": (0.0, None), "kd_lambda": (0.0, 1.0),
    "temperature": (0.0, None), "calibration_images": (1, 1_000_000), "warn_accuracy_drop": (0.0, 100.0),
}
_OPEN_LOW = {"lr", "temperature"}  # must be strictly above the lowest


def run_runtime(config: RunConfig):
    """The run's :class:`~compressor.runtime.Runtime`: its device, seed and verbosity; mixed precision
    where the device gains from it (CUDA) unless ``amp`` is off."""
    from .runtime import Runtime, pick_device

    return Runtime(device=pick_device(config.device), seed=config.seed, quiet=config.quiet,
                   amp=None if config.amp else False)


def check_config(config: RunConfig) -> None:
    """Raise CompressError naming the first setting of the wrong type or out of range."""
    if not isinstance(config.budget, Budget):
        raise CompressError(f"setting 'budget' must be a compressor.budget.Budget, got {type(config.budget).__name__}")
    hints = typing.get_type_hints(RunConfig)
    for f in fields(RunConfig):
        if f.name != "budget":
            _check_value(f.name, getattr(config, f.name), hints[f.name])
    if config.input_shape is not None:
        parse_shape(config.input_shape)
    bad = next((p for p in config.keep or () if not p.strip() or len(p) > 200), None)
    if bad is not None:
        raise CompressError(f"setting 'keep' holds {bad!r}: give module names or patterns such as layer4.* "
                            "(1 to 200 characters)")
    if config.in_memory is not None and (not set(config.in_memory) <= set(IN_MEMORY)
                                         or len(set(config.in_memory)) != len(config.in_memory)):
        raise CompressError(f"setting 'in_memory' is {config.in_memory!r}: a list of {' and '.join(IN_MEMORY)}")
    if config.precision is not None and config.precision not in PRECISIONS:
        raise CompressError(f"setting 'precision' is {config.precision!r}: use one of {', '.join(PRECISIONS)}")
    from .search import METHODS

    if config.method not in (*METHODS, NAS_METHOD):
        raise CompressError(f"setting 'method' is {config.method!r}: use one of {', '.join(METHODS)}")


def _check_value(name: str, value, hint) -> None:
    allowed = typing.get_args(hint) or (hint,)
    if value is None and type(None) in allowed:
        return
    kind = next(t for t in allowed if t is not type(None))
    if typing.get_origin(kind) is list:
        ok, kind = isinstance(value, list) and all(isinstance(v, str) for v in value), list
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        hint = _HINTS.get(name, "")
        raise CompressError(f"setting {name!r} must be {_NAMES[kind]}, got {_shown(value)}{hint}")
    low, high = _RANGES.get(name, (None, None))
    if low is not None and (value < low or (value == low and name in _OPEN_LOW)) or high is not None and value > high:
        bounds = f"above {low}" if high is None else f"from {low} to {high}"
        raise CompressError(f"setting {name!r} is {value!r}: it must be {bounds}")


_NAMES = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false", dict: "a table",
          list: "a list of strings"}
_HINTS = {"model": " (a model name or package.module:function); for a model you hold in memory, call "
                   "compressor.compress(model, ...)"}
_PLAIN = (str, int, float, bool, list, dict, tuple, type(None))  # values an error shows as they are


def _shown(value) -> str:
    """A wrong value as an error shows it: plain data as written (cut at 80 characters), any other
    object by its type (a module's repr runs to many lines)."""
    if not isinstance(value, _PLAIN):
        return f"a {type(value).__name__} object"
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def config_from_settings(saved: dict, source: str) -> RunConfig:
    """A RunConfig from a saved settings object; any wrong field is one CompressError naming ``source``."""
    saved = dict(saved)
    known = {f.name for f in fields(RunConfig)} - set(_NOT_SAVED)
    unknown = sorted(set(saved) - known - {"budget"})
    try:
        if unknown:
            raise CompressError(f"unknown setting {unknown[0]!r}")
        return RunConfig(budget=_saved_budget(saved.pop("budget", None)), **saved)
    except CompressError as exc:
        raise CompressError(f"{source} is damaged: {exc}; start a new run") from None


def _saved_budget(budget) -> Budget:
    """The budget of a settings file, as :meth:`Budget.to_dict` writes it: counts are whole numbers
    there (no '300M' strings), fractions plain numbers."""
    if not isinstance(budget, dict) or set(budget) - _BUDGET_KEYS:
        raise CompressError(f"setting 'budget' must be a table of {', '.join(sorted(_BUDGET_KEYS))}")
    for key in ("macs", "params"):
        value = budget.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise CompressError(f"budget {key} must be a whole number from 1 to 1e18, got {value!r}")
    if isinstance(budget.get("latency_ms"), str):
        raise CompressError(f"budget latency_ms must be a number of milliseconds, got {budget['latency_ms']!r}")
    return Budget(**budget)


def is_path(name: str, value) -> bool:
    """Whether the setting ``name`` with ``value`` names a file or folder (a weights or profile name does not)."""
    if value is None:
        return False
    if name == "weights":
        return not _WEIGHTS_NAME.match(value)
    if name == "target":
        return value.endswith(".toml") or "/" in value
    return True


def absolute_paths(config: RunConfig) -> None:
    """Make the settings that name files absolute, so a run resumes from any working directory."""
    for name in PATH_FIELDS:
        value = getattr(config, name)
        if is_path(name, value):
            setattr(config, name, str(Path(value).absolute()))


def paths_outside(config: RunConfig, run_dir: Path) -> list[str]:
    """The path settings that lie outside ``run_dir`` (those --resume must be given again)."""
    root = run_dir.resolve()
    outside = []
    for name in PATH_FIELDS:
        value = getattr(config, name)
        if is_path(name, value) and not Path(value).resolve().is_relative_to(root):
            outside.append(name)
    return outside


def resume_config(run_dir: str, quiet: bool = False, trust_code: bool = False, given: dict | None = None,
                  in_memory: list[str] | None = None) -> RunConfig:
    """The settings of the killed run in ``run_dir``, to continue it with ``compressor.pipeline.run``
    (``run_nas`` for a ``compress nas`` run).

    ``run.json`` is data: a user-code model spec in it is imported only with ``trust_code``, and the
    paths it names outside the run directory only when ``given`` again (``{"data": path, ...}``, the
    options typed on the command line). ``quiet`` is this invocation's, for logs and bars alike.
    ``in_memory`` is what the caller (``compressor.compress``) holds in memory: it must be what the
    run was made with, so a run made with a model or loaders in memory resumes only from Python.
    """
    path = Path(run_dir)
    source = f"{path / STATE_DIR / 'run.json'}"
    config = config_from_settings(read_settings(path), source)
    _check_in_memory(config, in_memory, run_dir)
    given = dict(given or {})
    for name, value in given.items():
        setattr(config, name, value)
    absolute_paths(config)
    outside = [n for n in paths_outside(config, path) if n not in given]
    if outside:
        name = outside[0]
        raise CompressError(
            f"{source} names {name} {getattr(config, name)!r} outside the run directory, and paths from a run "
            f"directory are trusted only inside it: confirm it with `compress --resume {run_dir} "
            f"{PATH_FIELDS[name]} {getattr(config, name)}`"
        )
    from .models import BUILTINS

    builds_shrinkcnn = config.model in BUILTINS and config.model.endswith(":shrinkcnn")
    if config.method == NAS_METHOD and not builds_shrinkcnn:
        raise CompressError(f"{source} is damaged: a compress nas run builds ShrinkCNN, not {config.model!r}; "
                            "start a new run")
    if ":" in config.model and config.model not in BUILTINS and not trust_code:
        raise CompressError(
            f"{source} names the user-code model {config.model!r}; resuming would import and run it: pass "
            "--trust-code (Python: trust_code=True) if you trust this run directory, or start a new run"
        )
    config.out, config.resume, config.quiet, config.trust_code = str(path), True, quiet, trust_code
    return config


def _check_in_memory(config: RunConfig, in_memory: list[str] | None, run_dir: str) -> None:
    """Raise CompressError unless the resuming caller holds in memory what the run was made with."""
    made, held = ([k for k in IN_MEMORY if k in (given or ())] for given in (config.in_memory, in_memory))
    if made == held:
        return
    if not held:  # the command line: the model or the loaders are gone with the Python process
        info = f" (its class path {config.model!r} is for information only)" if "model" in made else ""
        raise CompressError(
            f"{run_dir} was made by compressor.compress() with {_held_text(made)} in memory{info}: continue it "
            f"from Python with the same call and resume=True, compressor.compress(..., out={str(run_dir)!r}, "
            "resume=True)")
    raise CompressError(f"compress(resume=True): {run_dir} was made with {_held_text(made) or 'no model or loaders'}"
                        f" in memory, this call gives {_held_text(held)}: make the call that started it"
                        + ("" if made else f", or continue it with `compress --resume {run_dir}`"))


def _held_text(held) -> str:
    return " and ".join({"model": "its model", "data": "its DataLoaders"}[k] for k in held)

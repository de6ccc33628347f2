"""``RunReport``: one run's report (``compress`` or ``compress nas``) as typed data.

``report.json`` is :meth:`RunReport.to_dict`; report.md, report.html, ``compress report`` and the
CLI's summary read a :class:`RunReport`. :meth:`RunReport.from_dict` is the one place a report read
from a file is checked (types, NaN/Infinity, negative figures); it reads version 1 (the files written
before ``format_version`` existed: the same fields) and refuses newer versions in one line.

Attribute names are report.json's keys. Parts that other modules own and describe stay plain data:
``budget`` (:meth:`compressor.budget.Budget.to_dict`), ``settings`` (the run's settings), ``spec``
(a NAS run's network spec); latency measurements are :class:`exporters.stats.LatencyStats`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass, field
from typing import ClassVar

from compress_base.errors import CompressError
from exporters.stats import LatencyStats

from .report_checks import (
    EPOCH_FIELDS,
    HINT,
    ITEM_FIELDS,
    LATENCY_SIDES,
    RUN_FIELDS,
    check_fields,
    check_stats,
    is_number,
)

FORMAT_VERSION = 4  # 2: format_version added; 3: resolution, preprocess, exported_accuracy;
# 4: precision, training, reproduce, latency rounds and the low-precision model's latency
_REMEDY = "fix the file or run `compress` again"


@dataclass(frozen=True)
class Target:
    """The target profile as the report records it (:meth:`profiles.Profile.to_dict`)."""

    name: str | None = None
    description: str | None = None
    device: str | None = None
    runtimes: list[str] | None = None
    precision: str | None = None
    quantization: str | None = None  # the int8 recipe (since version 4)
    batch: int | None = None
    input_shape: list[int] | None = None
    channel_multiple: int | None = None
    measure: dict | None = None
    notes: dict = field(default_factory=dict)
    source: str | None = None
    host_model: str | None = None

    @classmethod
    def of(cls, profile) -> Target:
        """The record of a :class:`profiles.Profile`."""
        return cls(**profile.to_dict())


@dataclass(frozen=True)
class DataInfo:
    """The data set: where it came from, its train/val image counts and classes."""

    source: str
    train: int
    val: int
    num_classes: int | None = None

    @classmethod
    def of(cls, data) -> DataInfo:
        """The record of a loaded data set (``source``, ``train``, ``val``, ``num_classes``)."""
        return cls(source=data.source, train=len(data.train), val=len(data.val), num_classes=data.num_classes)


@dataclass(frozen=True)
class Costs:
    """MACs and parameters at the deployment input, and validation accuracy (0..1), of one model."""

    macs: int
    params: int
    accuracy: float


@dataclass(frozen=True)
class PredictedLatency:
    """p50 latencies (ms) the latency table predicts, for a run with a latency budget."""

    baseline: float
    compressed: float


@dataclass(frozen=True)
class Latency:
    """Latency measured on this machine; None where it was not (the target's ``compress bench`` gives it).
    ``precision``: the low-precision model (``PrecisionResult.file``), measured in the same rounds."""

    compressed: LatencyStats | None = None
    baseline: LatencyStats | None = None
    precision: LatencyStats | None = None


@dataclass(frozen=True)
class Reproduce:
    """How to run this again: the ``compress run`` command with the run's settings, the command line
    of the process that wrote the run (``sys.argv``: the CLI, or a script calling the Python API),
    and the versions of the software it used."""

    command: str
    process: str | None = None
    versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OnnxInfo:
    """The exported ONNX file, its opset, checker verdict and largest difference from PyTorch."""

    path: str
    opset: int
    max_abs_diff: float | None
    checker: str


@dataclass(frozen=True)
class ArchitectureInfo:
    """The delivered architecture: kept channels per group and blocks (compression), or the cell's
    edges (NAS). Parts a run does not have are None and left out of report.json."""

    file: str | None = None
    widths: dict[str, int] | None = None
    full_widths: dict[str, int] | None = None
    blocks: dict[str, bool] | None = None
    cell_edges: list | None = None
    dropped_blocks: list[str] = field(default_factory=list)

    @classmethod
    def of_widths(cls, file: str, widths: dict, full_widths: dict, blocks: dict) -> ArchitectureInfo:
        """A compressed architecture; its dropped blocks are the blocks marked False."""
        return cls(file=file, widths=widths, full_widths=full_widths, blocks=blocks,
                   dropped_blocks=[k for k, kept in blocks.items() if not kept])

    def to_dict(self) -> dict:
        """The parts this architecture has (None ones left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class FixedLayers:
    """Layers whose width the search leaves as it is, and why."""

    layers: list[str]
    reason: str


@dataclass(frozen=True)
class SearchInfo:
    """How many steps the search took, and the file that holds them."""

    steps: int
    file: str


@dataclass(frozen=True)
class Resolution:
    """The run's three sizes (``compressor.resolution``): the deployment shape, the search's proxy
    side and the side every accuracy was measured at."""

    deployment: list[int]
    search: int
    evaluation: int


@dataclass(frozen=True)
class ExportedAccuracy:
    """The shipped files' accuracy at the deployment shape on the validation images: through
    onnxruntime (the artifact) and PyTorch (the same model before export); they must agree."""

    images: int
    compressed_onnx: float
    compressed_pytorch: float
    baseline_onnx: float | None = None
    baseline_pytorch: float | None = None


@dataclass(frozen=True)
class SensitiveLayer:
    """A layer whose low precision costs accuracy: the validation accuracy (0..1) with that layer
    alone kept in fp32, against the accuracy with every layer in low precision."""

    layer: str
    accuracy_with_layer_fp32: float


@dataclass(frozen=True)
class PrecisionResult:
    """The precision the model ships in, and what it cost: the low-precision ONNX's accuracy on the
    validation images through onnxruntime, beside the fp32 ONNX's, and their top-1 agreement.
    A run shipping fp32 has ``file`` None and equal accuracies."""

    precision: str  # fp32 | fp16 | int8
    images: int
    fp32_accuracy: float
    accuracy: float
    agreement: float  # share of validation images where both models predict the same class
    file: str | None = None  # the low-precision ONNX, e.g. model.int8.onnx
    recipe: str | None = None  # how it was made, e.g. "int8 QDQ, symmetric s8 weights per channel, s8 activations"
    calibration_images: int | None = None
    sensitive_layers: list[SensitiveLayer] = field(default_factory=list)
    input_shape: list[int] | None = None  # where the accuracies were measured, when not the deployment shape

    @classmethod
    def from_dict(cls, obj: dict) -> PrecisionResult:
        return cls(**{**obj, "sensitive_layers": [SensitiveLayer(**d) for d in obj.get("sensitive_layers", [])]})


@dataclass(frozen=True)
class LatencyCheck:
    """One round of checking a latency-budgeted architecture on the target."""

    predicted_ms: float
    measured_ms: float
    macs: int


# The parts of report.json read into the dataclasses above, and the lists of them.
_PARTS = {"target": Target, "data": DataInfo, "baseline": Costs, "compressed": Costs,
          "predicted_latency_ms": PredictedLatency, "onnx": OnnxInfo, "architecture": ArchitectureInfo,
          "search": SearchInfo, "resolution": Resolution, "exported_accuracy": ExportedAccuracy,
          "precision": PrecisionResult, "reproduce": Reproduce}
_LISTS = {"fixed_layers": FixedLayers, "latency_check": LatencyCheck}
# Keys one kind of run leaves out: a NAS run (a cell found from scratch, with its spec) has no original
# weights, latency prediction or check; a compression run has no spec.
_COMPRESSION_ONLY = ("weights", "predicted_latency_ms", "latency_check")
_SINCE_3 = ("resolution", "preprocess", "exported_accuracy", "precision", "training",
            "reproduce")  # added by versions 3-4; left out when absent


@dataclass(kw_only=True)
class RunReport:
    """What a run found and delivered. ``model`` and ``compressed`` are required; the rest defaults to
    "not recorded". See the module docstring for the parts kept as plain data. report.json's
    ``baseline.latency_ms`` and ``compressed.latency_ms`` (p50/p90/p99) are written from ``latency``;
    ``training`` maps a training ("teacher", "fine-tune") to its per-epoch records (``epoch``,
    ``loss``, ``train_acc``, ``lr``, ``seconds``, ``val_acc``: see :func:`compressor.train.train`)."""

    format_version: ClassVar[int] = FORMAT_VERSION

    model: str
    weights: str | None = None
    out: str | None = None
    target: Target | None = None
    method: str | None = None
    input_shape: list[int] | None = None
    train_resolution: int | None = None
    resolution: Resolution | None = None
    preprocess: dict | None = None
    data: DataInfo | None = None
    budget: dict | None = None
    baseline: Costs | None = None
    compressed: Costs
    exported_accuracy: ExportedAccuracy | None = None
    precision: PrecisionResult | None = None
    predicted_latency_ms: PredictedLatency | None = None
    latency: Latency = field(default_factory=Latency)
    onnx: OnnxInfo | None = None
    spec: dict | None = None
    architecture: ArchitectureInfo | None = None
    fixed_layers: list[FixedLayers] = field(default_factory=list)
    search: SearchInfo | None = None
    latency_check: list[LatencyCheck] | None = None
    training: dict[str, list[dict]] | None = None  # per-epoch records of each training: "teacher", "fine-tune"
    reproduce: Reproduce | None = None
    settings: dict | None = None
    notes: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def is_nas(self) -> bool:
        """A network searched from scratch (``compress nas``): it has a spec and no baseline."""
        return self.spec is not None

    def to_dict(self) -> dict:
        """report.json's content: ``format_version``, every part (version 1's keys, in its order), and
        last the ``warnings`` derived from them (:mod:`compressor.report_warnings`; not read back)."""
        data = {"format_version": self.format_version}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("baseline", "compressed"):
                value = _costs_dict(value, getattr(self.latency, f.name))
            elif f.name == "latency":
                value = {side: _stats_dict(getattr(value, side)) for side in LATENCY_SIDES
                         if side != "precision" or value.precision is not None}
            elif f.name == "architecture" and value is not None:
                value = value.to_dict()
            elif f.name == "target" and value is not None:  # a report older than version 4 has no recipe
                value = {k: v for k, v in dataclasses.asdict(value).items() if k != "quantization" or v is not None}
            elif f.name in _PARTS and value is not None:
                value = dataclasses.asdict(value)
            elif f.name in _LISTS and value is not None:
                value = [dataclasses.asdict(v) for v in value]
            data[f.name] = value
        for key in _COMPRESSION_ONLY if self.is_nas else ("spec",):
            del data[key]
        for key in _SINCE_3:  # an older report read back has none: written as it was
            if data[key] is None:
                del data[key]
        from .report_warnings import warnings_of  # derived from the rest; imports this module

        data["warnings"] = [w.to_dict() for w in warnings_of(self)]
        return data

    @classmethod
    def from_dict(cls, data, source: str = "report") -> RunReport:
        """The report in ``data`` (report.json's content, read from ``source``, named in errors),
        checked: a wrong field, an unknown version or a missing part is one CompressError line."""
        if not isinstance(data, dict):
            raise CompressError(f"{source} is not a compress run report; {HINT}")
        _check_version(data, source)
        _check_run(data, source)
        parts = {key: _part(cls_, data.get(key), key, source) for key, cls_ in _PARTS.items()}
        lists = {key: [_part(cls_, item, f"{key}.{i}", source) for i, item in enumerate(data[key])]
                 for key, cls_ in _LISTS.items() if data.get(key) is not None}
        latency = Latency(**{side: _stats(data["latency"].get(side), side, source) for side in LATENCY_SIDES})
        plain = {f.name: data[f.name] for f in dataclasses.fields(cls)
                 if f.name in data and f.name not in {*parts, *lists, "latency"} and data[f.name] is not None}
        return cls(**plain, **parts, **lists, latency=latency)


def _costs_dict(costs: Costs | None, stats: LatencyStats | None) -> dict | None:
    if costs is None:
        return None
    pcts = {k: getattr(stats, k) for k in ("p50", "p90", "p99")} if stats else None
    return {**dataclasses.asdict(costs), "latency_ms": pcts}


def _stats_dict(stats: LatencyStats | None) -> dict | None:
    return stats.to_dict() if stats is not None else None


# --------------------------------------------------------------------------------------------
# Reading: version, field checks, parts
# --------------------------------------------------------------------------------------------

def _check_version(data: dict, source: str) -> None:
    version = data.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CompressError(f"{source}: format_version {version!r} is not a report version (1 to {FORMAT_VERSION}); "
                            f"{_REMEDY}")
    if version > FORMAT_VERSION:
        raise CompressError(f"{source} is a version {version} report, written by a newer compressor; this one "
                            f"reads versions 1 to {FORMAT_VERSION}: upgrade compressor to read it")


def _check_run(report: dict, where: str) -> None:
    if not isinstance(report.get("model"), str):
        raise CompressError(f"{where} is not a compress run report (no model name); {HINT}")
    for part in ("compressed", "baseline"):
        costs = report.get(part)
        if part == "baseline" and costs is None:
            continue
        if not isinstance(costs, dict) or not all(is_number(costs.get(k)) for k in ("macs", "params", "accuracy")):
            raise CompressError(f"{where} is not a compress run report ({part} has no macs/params/accuracy); {HINT}")
    lat = report.get("latency")
    if not isinstance(lat, dict):
        raise CompressError(f"{where} is not a compress run report (no latency); {HINT}")
    for side in LATENCY_SIDES:
        if lat.get(side) is not None:  # None: measured only on the device (compress bench)
            check_stats(lat[side], f"{where} ({side} latency)")
    check_fields(report, RUN_FIELDS, where, _REMEDY)
    for key, item_fields in ITEM_FIELDS.items():
        for i, item in enumerate(report.get(key) or []):
            check_fields(item, item_fields, where, _REMEDY, prefix=f"{key}.{i}.")
    for name, records in (report.get("training") or {}).items():
        for i, record in enumerate(records):
            check_fields(record, EPOCH_FIELDS, where, _REMEDY, prefix=f"training.{name}.{i}.")


def _part(cls, obj: dict | None, key: str, where: str):
    """``cls`` from the object ``obj`` (the field ``key``; None stays None); the fields ``cls``
    needs must be there, those it does not know are left out."""
    if obj is None:
        return None
    if cls is PrecisionResult:
        for i, item in enumerate(obj.get("sensitive_layers", [])):
            check_fields(item, {"layer": "text", "accuracy_with_layer_fp32": "fraction"}, where, _REMEDY,
                         prefix=f"{key}.sensitive_layers.{i}.")
    for f in dataclasses.fields(cls):
        if f.name not in obj and f.default is MISSING and f.default_factory is MISSING:
            raise CompressError(f"{where}: field '{key}.{f.name}' is missing; {_REMEDY}")
    known = {f.name: obj[f.name] for f in dataclasses.fields(cls) if f.name in obj}
    return cls.from_dict(known) if hasattr(cls, "from_dict") else cls(**known)


def _stats(obj: dict | None, side: str, where: str) -> LatencyStats | None:
    stats = _part(LatencyStats, obj, f"latency.{side}", where)
    return dataclasses.replace(stats, input_shape=tuple(stats.input_shape)) if stats else None


__all__ = ["FORMAT_VERSION", "ArchitectureInfo", "Costs", "DataInfo", "ExportedAccuracy", "FixedLayers", "Latency",
           "LatencyCheck", "OnnxInfo", "PredictedLatency", "PrecisionResult", "Reproduce", "Resolution", "RunReport",
           "SearchInfo",
           "SensitiveLayer", "Target"]

"""Uncertainty in reports: standard errors, per-round speed-up ranges and digits, against hand-worked
numbers; the rounds of a latency measurement pooled exactly; the new report fields read back checked."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from compress_base.errors import CompressError
from compressor.report_uncertainty import (
    accuracy_se,
    accuracy_text,
    decimals_for,
    difference_se,
    latency_text,
    p50_uncertainty,
    speedup,
    speedup_text,
    with_error,
)
from compressor.run_report import PrecisionResult, Reproduce, RunReport
from exporters.stats import LatencyStats

DATA = Path(__file__).parent / "data"


def rounds_of(*times: list[float]) -> list[LatencyStats]:
    meta = dict(batch=1, input_shape=(3, 8, 8), warmup=2, runtime="onnxruntime-cpu", device="cpu")
    return [LatencyStats.from_times(t, **meta) for t in times]


def test_standard_errors():
    assert accuracy_se(0.9, 100) == pytest.approx(0.03)  # sqrt(.9 * .1 / 100)
    assert accuracy_se(1.0, 50) == 0.0
    assert difference_se(0.9, 0.6, 100) == pytest.approx(math.hypot(0.03, math.sqrt(0.24 / 100)))


@pytest.mark.parametrize("err, decimals", [(0.04, 2), (0.15, 2), (0.0018, 4), (2.9, 0), (35.0, 0), (0.0, 3),
                                           (None, 3), (math.inf, 3)])
def test_decimals_follow_the_error(err, decimals):
    assert decimals_for(err) == decimals


def test_values_written_to_their_precision():
    assert with_error(10.3456, 0.42, " ms") == "10.3 ± 0.4 ms"
    assert with_error(10.3456, 0.012) == "10.346 ± 0.012"
    assert accuracy_text(0.9, 100) == "90% ± 3 (n=100)"
    assert accuracy_text(0.9137, 359) == "91.4% ± 1.5 (n=359)"  # se 1.48 points
    assert accuracy_text(0.9, 1_000_000) == "90.00% ± 0.03 (n=1000000)"  # never past two decimals of a point
    assert accuracy_text(1.0, 40) == "100.0% (n=40)"  # a zero binomial error says nothing
    assert accuracy_text(0.5, None) == "50.0%"


def test_from_rounds_pools_exactly():
    a, b, c = [1.0, 1.2, 1.1, 1.4], [2.0, 1.9, 2.2], [1.5, 1.3, 1.6, 1.2, 1.1]
    pooled = LatencyStats.from_rounds(rounds_of(a, b, c))
    every = np.array(a + b + c)
    assert pooled.runs == 12 and pooled.mean == pytest.approx(every.mean())
    assert pooled.std == pytest.approx(every.std(ddof=1))  # within- plus between-round sums of squares
    assert pooled.rounds == [pytest.approx(1.15), pytest.approx(2.0), pytest.approx(1.3)]
    assert pooled.p50 == pytest.approx(1.3)  # the median of the rounds' medians
    assert pooled.throughput == pytest.approx(1000 / every.mean())
    assert "rounds" in pooled.to_dict() and "rounds" not in rounds_of(a)[0].to_dict()


def test_speedup_range_from_per_round_ratios():
    base = LatencyStats.from_rounds(rounds_of([10.0], [12.0], [11.0]))
    comp = LatencyStats.from_rounds(rounds_of([2.0], [3.0], [2.5]))
    s = speedup(base, comp)
    assert s.ratio == pytest.approx(11.0 / 2.5) and (s.low, s.high) == (pytest.approx(4.0), pytest.approx(5.0))
    assert speedup_text(s) == "4.4x (4.0-5.0)"  # half the range 0.5: one decimal
    assert latency_text(base) == "11.0 ms (rounds 10.0-12.0)"  # half-range 1.0: two digits of an error led by 1
    assert p50_uncertainty(base) == pytest.approx(1.0)
    one = rounds_of([1.0, 1.1, 0.9, 1.0])[0]
    assert speedup(one, one).low is None and speedup_text(speedup(one, one)) == "1x"


def test_new_fields_round_trip_and_are_checked():
    data = json.loads((DATA / "report_v1.json").read_text())
    report = RunReport.from_dict(data)
    rounds = LatencyStats.from_rounds(rounds_of([1.0, 1.2], [1.1, 1.3]))
    full = dataclasses.replace(
        report, latency=dataclasses.replace(report.latency, precision=rounds),
        precision=PrecisionResult(precision="int8", images=359, fp32_accuracy=0.16, accuracy=0.15, agreement=0.9,
                                  file="model.int8.onnx"),
        training={"fine-tune": [{"epoch": 1, "loss": 2.1, "train_acc": 0.3, "val_acc": 0.2, "lr": 0.01,
                                 "seconds": 1.5}]},
        reproduce=Reproduce(command="compress run --model resnet18", versions={"torch": "2.4.0"}))
    text = json.dumps(full.to_dict())
    again = RunReport.from_dict(json.loads(text))
    assert again == full and again.latency.precision.rounds == rounds.rounds
    for path, value, message in [
        (("training", "fine-tune", 0, "val_acc"), 1.5, "field 'training.fine-tune.0.val_acc' must be a number between"),
        (("training",), {"x": [1]}, "field 'training' must be an object of lists of objects"),
        (("reproduce", "versions"), {"torch": 2}, "field 'reproduce.versions' must be an object of strings"),
        (("latency", "precision", "rounds"), [1.0, -1.0], "field 'latency.precision.rounds' must be a list of non-neg"),
        (("warnings",), ["x"], "field 'warnings' must be a list of objects"),
    ]:
        bad = copy.deepcopy(json.loads(text))
        obj = bad
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value
        with pytest.raises(CompressError, match=message):
            RunReport.from_dict(bad, "r")

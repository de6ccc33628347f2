"""Each warning of a run report fires on a constructed report that calls for it, and none fires on a
clean one; every warning shows in report.json, report.md and the CLI's last lines."""
from __future__ import annotations

import dataclasses
import json

import pytest

from compressor.report import markdown, summary_line, write_reports
from compressor.report_warnings import warnings_of
from compressor.run_report import (
    Costs,
    DataInfo,
    ExportedAccuracy,
    FixedLayers,
    Latency,
    PrecisionResult,
    PredictedLatency,
    RunReport,
    SensitiveLayer,
    Target,
)
from exporters.stats import LatencyStats


def stats(p50: float, rounds: list[float], p90: float | None = None) -> LatencyStats:
    return LatencyStats(p50=p50, p90=p90 or 1.05 * p50, p99=1.1 * p50, mean=p50, std=0.01 * p50,
                        throughput=1000 / p50, warmup=5, runs=50, batch=1, input_shape=(3, 32, 32),
                        runtime="onnxruntime-cpu", device="test CPU", rounds=rounds)


def clean() -> RunReport:
    """A run no check finds fault with: a 0.2-point drop measured on 100,000 images, MACs at 95% of
    the budget, tight latency rounds, int8 within 0.3 points of fp32, no fixed layers."""
    return RunReport(
        model="net", out="/runs/x", method="greedy",
        target=Target(name="cpu", device="cpu", runtimes=["onnxruntime-cpu"]),
        data=DataInfo(source="test", train=1000, val=100_000, num_classes=10),
        budget={"macs": 100_000_000, "params": None, "latency_ms": None},
        baseline=Costs(macs=200_000_000, params=2_000_000, accuracy=0.900),
        compressed=Costs(macs=95_000_000, params=1_000_000, accuracy=0.898),
        exported_accuracy=ExportedAccuracy(images=100_000, compressed_onnx=0.898, compressed_pytorch=0.898),
        precision=PrecisionResult(precision="int8", images=100_000, fp32_accuracy=0.898, accuracy=0.895,
                                  agreement=0.99, file="model.int8.onnx",
                                  sensitive_layers=[SensitiveLayer("conv1", 0.897), SensitiveLayer("fc", 0.8965)]),
        latency=Latency(baseline=stats(10.0, [9.9, 10.0, 10.1]), compressed=stats(5.0, [4.95, 5.0, 5.05]),
                        precision=stats(3.0, [2.98, 3.0, 3.02])),
        fixed_layers=[FixedLayers(["layer1.0"], "kept (--keep layer1): the residual block stays")],
        settings={"warn_accuracy_drop": 1.0},
    )


def kinds(report: RunReport) -> list[str]:
    return [w.kind for w in warnings_of(report)]


def test_a_clean_report_has_no_warnings():
    assert warnings_of(clean()) == []


def test_accuracy_drop_above_the_threshold():
    report = dataclasses.replace(clean(), compressed=Costs(macs=95_000_000, params=1_000_000, accuracy=0.454))
    (w,) = [w for w in warnings_of(report) if w.kind == "accuracy_drop"]
    assert "fell 44.6 points, from 90.0% to 45.4%" in w.message
    # at the threshold: silent; the threshold is the run's setting
    at = dataclasses.replace(clean(), compressed=Costs(macs=95_000_000, params=1_000_000, accuracy=0.890))
    assert "accuracy_drop" not in kinds(at)
    assert "accuracy_drop" in kinds(dataclasses.replace(at, settings={"warn_accuracy_drop": 0.5}))


def test_precision_drop_names_the_sensitive_layers():
    p = dataclasses.replace(clean().precision, accuracy=0.870)
    (w,) = warnings_of(dataclasses.replace(clean(), precision=p))
    assert w.kind == "precision_drop"
    assert "int8 costs 2.8 points: 87.0% against 89.8%" in w.message
    assert w.message.index("conv1 (89.7% with it in fp32)") < w.message.index("fc (89.")  # the most sensitive first


def test_fp32_precision_is_not_compared():
    p = PrecisionResult(precision="fp32", images=50, fp32_accuracy=0.898, accuracy=0.898, agreement=1.0)
    assert warnings_of(dataclasses.replace(clean(), precision=p)) == []


def test_validation_set_too_small_states_the_standard_error():
    report = dataclasses.replace(clean(), exported_accuracy=None, precision=None,
                                 data=DataInfo(source="test", train=1000, val=400))
    (w,) = warnings_of(report)
    # se(0.9, 400) = sqrt(.09 / 400) = 1.50 points; se(.898, 400) = 1.51; difference sqrt(1.50² + 1.51²) = 2.13
    assert w.kind == "validation_size"
    assert "400 validation images cannot resolve a 1-point difference" in w.message
    assert "standard error of about 1.5 points and their difference 2.1 points" in w.message
    assert "under 4.3 points are noise" in w.message
    # 2 se <= 1 point needs (.09 + .0916) * 200² = 7264 images, rounded up to 7300
    assert "use about 7300 images" in w.message


def test_budget_met_far_below_the_target():
    report = dataclasses.replace(clean(), compressed=Costs(macs=40_000_000, params=1_000_000, accuracy=0.898))
    (w,) = warnings_of(report)
    assert w.kind == "budget_slack" and "macs 40M is 40% of the 100M budget" in w.message
    # an original that meets the budget already is no search that overshot
    small = dataclasses.replace(report, baseline=Costs(macs=90_000_000, params=2_000_000, accuracy=0.9))
    assert "budget_slack" not in kinds(small)


def test_latency_budget_far_below_uses_the_measured_latency():
    report = dataclasses.replace(clean(), budget={"macs": None, "latency_ms": 8.0})
    (w,) = warnings_of(report)  # measured 5.0 ms against 8.0 ms
    assert w.kind == "budget_slack" and "latency_ms 5 ms is 62% of the 8 ms budget" in w.message


@pytest.mark.parametrize("latency, said", [
    (Latency(baseline=stats(10.0, [9.9, 10.0, 10.1], p90=25.0), compressed=stats(5.0, [4.95, 5.0, 5.05])),
     "the baseline model's p90 is 2.5x its p50"),
    (Latency(baseline=stats(10.3, [10.3, 16.1, 10.2]), compressed=stats(5.0, [4.95, 5.0, 5.05])),
     "the baseline model's rounds differ by 57% of its p50 (10.2 to 16.1 ms)"),
])
def test_latency_spread_says_how_to_measure_better(latency, said):
    (w,) = warnings_of(dataclasses.replace(clean(), latency=dataclasses.replace(latency, precision=None)))
    assert w.kind == "latency_spread" and said in w.message
    assert "--latency-runs" in w.message and "compress bench" in w.message


def test_the_low_precision_model_is_named_by_its_precision():
    latency = dataclasses.replace(clean().latency, precision=stats(3.0, [2.0, 3.0, 4.5]))
    (w,) = warnings_of(dataclasses.replace(clean(), latency=latency))
    assert "the int8 model's rounds differ by 83% of its p50 (2 to 4.5 ms)" in w.message


def test_speedup_range_too_wide():
    # each model's rounds spread 20% (under the 25% bound), yet the per-round ratios run 1.6 to 2.4
    latency = Latency(baseline=stats(10.0, [9.0, 10.0, 11.0]), compressed=stats(5.0, [5.5, 5.0, 4.6]))
    (w,) = warnings_of(dataclasses.replace(clean(), latency=latency))
    assert w.kind == "latency_spread" and "the speed-up ranges over 2.0x (1.6-2.4) across rounds" in w.message


def test_layers_left_fixed_but_not_those_kept_on_request():
    fixed = FixedLayers(["features.1.conv.0.0", "features.1.conv.1"], "grouped convolution features.1.conv.0.0 "
                        "(groups=32): Torch-Pruning cannot keep its channels consistent per group, so they stay fixed")
    report = dataclasses.replace(clean(), fixed_layers=[*clean().fixed_layers, fixed])
    (w,) = warnings_of(report)
    assert w.kind == "fixed_layers" and "features.1.conv.0.0, features.1.conv.1 (grouped convolution" in w.message


def test_target_not_measured_on_its_device():
    report = dataclasses.replace(clean(), latency=Latency(), predicted_latency_ms=PredictedLatency(10.0, 4.2),
                                 target=Target(name="jetson-orin-nano", runtimes=["tensorrt"]))
    (w,) = warnings_of(report)
    assert w.kind == "not_measured" and "the 4.2 ms quoted is the latency table's prediction" in w.message
    assert "compress bench model.onnx --target jetson-orin-nano" in w.message


def test_target_measured_with_another_runtime():
    report = dataclasses.replace(clean(), target=Target(name="gpu", runtimes=["tensorrt", "onnxruntime-cpu"]))
    (w,) = warnings_of(report)
    assert w.kind == "not_measured" and "measured with onnxruntime-cpu, not tensorrt" in w.message


def test_warnings_reach_every_output(tmp_path):
    report = dataclasses.replace(clean(), compressed=Costs(macs=95_000_000, params=1_000_000, accuracy=0.454))
    write_reports(tmp_path, report)
    written = json.loads((tmp_path / "report.json").read_text())
    assert [w["kind"] for w in written["warnings"]] == ["accuracy_drop"]
    assert RunReport.from_dict(written) == report  # the derived list is checked, not read back
    assert "## Warnings" in markdown(report) and "**accuracy\\_drop**" not in markdown(report)
    assert "- **accuracy_drop**: accuracy fell 44.6 points" in markdown(report)
    assert "fell 44.6 points" in (tmp_path / "report.html").read_text()
    lines = summary_line(report).splitlines()
    assert lines[-3] == "1 warning:" and lines[-2].startswith("  ! accuracy fell 44.6 points")
    assert "no warnings" in summary_line(clean())


def test_a_zero_threshold_warns_of_any_drop_and_does_not_fail():
    report = dataclasses.replace(clean(), settings={"warn_accuracy_drop": 0.0})
    assert "accuracy_drop" in kinds(report) and "validation_size" not in kinds(report)

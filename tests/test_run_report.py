"""RunReport: report.json as typed data; version-1 files load, newer ones are refused in one line."""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from test_merge import make_run

from compress_base.errors import CompressError
from compressor.cli import main
from compressor.report import markdown, summary_line, summary_line_nas, write_reports
from compressor.run_report import (
    FORMAT_VERSION,
    ArchitectureInfo,
    Costs,
    DataInfo,
    Latency,
    RunReport,
    Target,
)

DATA = Path(__file__).parent / "data"
V1_FILES = ["report_v1.json", "report_v1_nas.json"]  # written by `compress` / `compress nas` before format 2


def _v1(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@pytest.mark.parametrize("name", V1_FILES)
def test_version_1_loads_and_writes_the_same_keys_plus_the_version(name):
    data = _v1(name)
    report = RunReport.from_dict(data, name)
    written = report.to_dict()
    assert written.pop("format_version") == FORMAT_VERSION == 4
    assert isinstance(written.pop("warnings"), list)  # derived, written last
    assert written == data and list(written) == list(data)  # every key, in version 1's order


@pytest.mark.parametrize("name", V1_FILES)
def test_round_trip(name):
    report = RunReport.from_dict(_v1(name), name)
    again = RunReport.from_dict(json.loads(json.dumps(report.to_dict())), "again")
    assert again == report


def test_typed_parts():
    report = RunReport.from_dict(_v1("report_v1.json"))
    assert not report.is_nas and report.compressed.macs == 14638080 and report.baseline.accuracy > 0
    measured = report.latency.compressed
    assert measured.runtime == "onnxruntime-cpu" and measured.input_shape == (3, 32, 32)
    assert report.architecture.dropped_blocks == ["layer2.1", "layer3.1", "layer4.1"]
    assert report.target.name == "cpu" and report.data.val == 359 and report.onnx.checker == "passed"
    nas = RunReport.from_dict(_v1("report_v1_nas.json"))
    assert nas.is_nas and nas.baseline is None
    assert nas.architecture.widths is None and len(nas.architecture.cell_edges) == 3


def test_built_in_code_matches_the_file():
    """The constructor a pipeline fills gives the same report.json as the run wrote."""
    data = _v1("report_v1.json")
    read = RunReport.from_dict(data)
    arch = data["architecture"]
    built = dataclasses.replace(
        read,
        target=Target(**data["target"]),
        data=DataInfo.of(SimpleNamespace(source=data["data"]["source"], train=range(1438), val=range(359),
                                         num_classes=10)),
        baseline=Costs(**{k: data["baseline"][k] for k in ("macs", "params", "accuracy")}),
        compressed=Costs(**{k: data["compressed"][k] for k in ("macs", "params", "accuracy")}),
        latency=Latency(compressed=read.latency.compressed, baseline=read.latency.baseline),
        architecture=ArchitectureInfo.of_widths(arch["file"], arch["widths"], arch["full_widths"], arch["blocks"]),
    )
    assert built == read and built.to_dict()["compressed"]["latency_ms"] == data["compressed"]["latency_ms"]


def test_target_records_every_profile_field():
    from profiles import load_profile

    profile = load_profile("cpu")
    assert dataclasses.asdict(Target.of(profile)) == profile.to_dict()


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 99])
def test_a_newer_version_is_one_line(version):
    data = {**_v1("report_v1.json"), "format_version": version}
    with pytest.raises(CompressError) as info:
        RunReport.from_dict(data, "r/report.json")
    message = str(info.value)
    assert "\n" not in message and f"version {version} report" in message and "upgrade compressor" in message
    assert message.startswith("r/report.json")


@pytest.mark.parametrize("version", [0, "2", 1.5, True, None])
def test_a_version_that_is_no_version(version):
    with pytest.raises(CompressError, match="is not a report version"):
        RunReport.from_dict({**_v1("report_v1.json"), "format_version": version}, "r")


def test_compress_report_refuses_a_newer_run_report(tmp_path):
    run = make_run(tmp_path, "run_a", method="greedy", macs=19_000_000, acc=0.88, p50=0.46)
    data = json.loads((run / "report.json").read_text())
    (run / "report.json").write_text(json.dumps({"format_version": 7, "model": data["model"]}))
    result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "version 7 report" in lines[0] and "upgrade compressor" in lines[0]


@pytest.mark.parametrize("keys, value, message", [
    (("data", "train"), None, "field 'data.train' is missing"),
    (("onnx", "opset"), "17", "field 'onnx.opset' must be a non-negative integer"),
    (("timings_s", "data"), -1.0, "field 'timings_s' must be an object of non-negative numbers"),
    (("latency", "compressed", "mean"), None, "field 'latency.compressed.mean' is missing"),
    (("fixed_layers",), [{"layers": "fc", "reason": "x"}], "field 'fixed_layers.0.layers' must be a list of strings"),
])
def test_bad_parts_are_one_line(keys, value, message):
    data = copy.deepcopy(_v1("report_v1.json"))
    obj = data
    for key in keys[:-1]:
        obj = obj[key]
    if value is None:
        del obj[keys[-1]]
    else:
        obj[keys[-1]] = value
    with pytest.raises(CompressError, match=message) as info:
        RunReport.from_dict(data, "r/report.json")
    assert "\n" not in str(info.value)


def test_write_reports_takes_a_report_or_its_dict(tmp_path):
    data = _v1("report_v1.json")
    report = RunReport.from_dict(data)
    for out, given in ((tmp_path / "typed", report), (tmp_path / "dict", copy.deepcopy(data))):
        out.mkdir()
        assert write_reports(out, given) == report
        written = json.loads((out / "report.json").read_text())
        assert [w["kind"] for w in written.pop("warnings")] == ["validation_size"]
        assert written == {"format_version": 4, **data}
        assert (out / "report.md").read_text() == markdown(report)
        assert (out / "report.html").is_file()


def test_summary_lines():
    """The CLI's last lines: the summary table (accuracy with its standard error on the 359 images),
    every warning, and where the run was written."""
    lines = summary_line(RunReport.from_dict(_v1("report_v1.json"))).splitlines()
    assert lines[0] == "resnet18 (greedy):"
    assert lines[1].split() == ["original", "compressed", "change"]
    assert lines[2].split() == ["MACs", "37M", "14.6M", "39.5%"]
    # 8.9% of 359: se = sqrt(.089 * .911 / 359) = 1.50 points; 16.2%: 1.95; difference sqrt(1.50² + 1.95²) = 2.46
    assert "8.9% ± 1.5 (n=359)" in lines[4] and "16.2% ± 1.9 (n=359)" in lines[4] and "+7 ± 2 points" in lines[4]
    assert lines[5].split()[:5] == ["latency", "p50", "1.11", "ms", "0.571"] and "speed-up 1.9x" in lines[5]
    assert lines[-3] == "1 warning:" and "standard error of about 1.5 points" in lines[-2]
    assert lines[-1] == "written to /tmp/v1run"
    unmeasured = dataclasses.replace(RunReport.from_dict(_v1("report_v1.json")), latency=Latency())
    text = summary_line(unmeasured)
    assert "latency to be measured on the target" in text
    assert "latency was not measured on cpu's device" in text
    nas = summary_line_nas(RunReport.from_dict(_v1("report_v1_nas.json"))).splitlines()
    assert nas[0] == "3 cell edges" and nas[1] == "shrinkcnn (autoshrink-cell):" and nas[-1] == "written to /tmp/v1nas"
    assert nas[3].split() == ["MACs", "8.07M"] and nas[5].split()[:3] == ["val", "accuracy", "10.0%"]

"""A run's report end to end: training curves, latency rounds, warnings and the reproduce block in
report.json; the command it records parses back to the same settings; model.onnx describes itself
through `compress bench`."""
from __future__ import annotations

import json
import shlex

import pytest
from click.testing import CliRunner

from compressor.budget import Budget
from compressor.cli import main, nas_command, run_command
from compressor.networks.shrinkcnn import SPEC_NAME
from compressor.settings import NAS_METHOD, RunConfig
from compressor.stages.reporting import NAS_SETTINGS, cli_command


def _parsed(command: str, name: str = "run") -> dict:
    """The options `compress run` (or `compress nas`) parses from ``command`` (as the command's function
    receives them)."""
    args = shlex.split(command)
    assert args[:2] == ["compress", name]
    return (run_command if name == "run" else nas_command).make_context(name, args[2:]).params


def test_the_recorded_command_parses_back_to_the_settings():
    config = RunConfig(budget=Budget(macs=20_000_000), model="resnet18", epochs=1, teacher_epochs=2,
                       temperature=3.0, kd_lambda=0.5, keep=["layer1", "fc"], options={"k": 3}, amp=False,
                       from_scratch=True, input_shape="3x64x64", train_resolution=16, seed=7, lr=0.1,
                       warn_accuracy_drop=2.5, precision="int8", out="/somewhere", quiet=True)
    params = _parsed(cli_command(config, {"macs": 20_000_000, "params": None, "latency_ms": None}))
    assert params["budget_macs"] == 20_000_000 and params["budget_params"] is None
    again = {**params, "data": params.pop("data_dir")}
    for key in ("model", "epochs", "teacher_epochs", "temperature", "kd_lambda", "from_scratch", "train_resolution",
                "seed", "lr", "warn_accuracy_drop", "precision", "amp"):
        assert again[key] == getattr(config, key), key
    assert list(again["keep"]) == ["layer1", "fc"] and again["options"] == {"k": 3}
    assert again["input_shape"] in ("3x64x64", (3, 64, 64))
    assert again["out"] is None and not again["quiet"]  # where it writes and how loud: not part of the result


def test_the_recorded_nas_command_parses_back_to_the_settings():
    config = RunConfig(budget=Budget(macs=5_000_000), model=SPEC_NAME, method=NAS_METHOD, data="/data/my images",
                       target="jetson-orin-nano", input_shape="3x64x64", train_resolution=16, epochs=2, batch_size=32,
                       lr=0.1, options={"k": 2, "max_steps": 1, "score_initial": False, "lr": 0.004}, seed=7,
                       device="cpu", latency_runs=5, out="/somewhere", quiet=True)
    command = cli_command(config, config.budget.to_dict(), "nas")
    opts = dict(_parsed(command, "nas"))
    assert opts.pop("space") == "shrinkcnn" and opts["out"] is None and not opts["quiet"]
    # the settings nas_command makes of what it parsed (as it does)
    again = RunConfig(budget=Budget(macs=opts.pop("budget_macs")), data=opts.pop("data_dir"), model=SPEC_NAME,
                      method=NAS_METHOD, **opts)
    assert again.budget.to_dict() == config.budget.to_dict()
    assert {k: v for k, v in again.settings().items() if k not in ("out", "quiet")} == \
        {k: v for k, v in config.settings().items() if k not in ("out", "quiet")}
    assert opts["options"]["score_initial"] is False  # a flag option stays a bool, not the text 'False'
    # every setting it reproduces is an option of compress nas
    names = {"data" if p.name == "data_dir" else p.name for p in nas_command.params}
    assert names >= NAS_SETTINGS
    assert cli_command(RunConfig(budget=Budget(macs=5), model=SPEC_NAME, method=NAS_METHOD), {"macs": 5}, "nas") == \
        "compress nas --budget-macs 5"


def test_defaults_are_left_out():
    command = cli_command(RunConfig(budget=Budget(macs=5)), {"macs": 5, "latency_ms": None})
    assert command == "compress run --budget-macs 5"
    assert cli_command(RunConfig(budget=Budget(latency_ms=0.8)), {"latency_ms": 0.8}).endswith("--budget-latency 0.8")


@pytest.mark.slow
def test_a_run_reports_curves_rounds_warnings_and_how_to_reproduce(tmp_path):
    out = tmp_path / "r"
    args = ["run", "--budget-macs", "20M", "--train-resolution", "16", "--input-shape", "3x64x64", "--epochs", "2",
            "--teacher-epochs", "1", "--latency-runs", "5", "--warn-accuracy-drop", "0.5", "--out", str(out), "-q",
            "--option", "images=32", "--option", "step=0.2"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [r["epoch"] for r in report["training"]["fine-tune"]] == [1, 2]
    assert [r["epoch"] for r in report["training"]["teacher"]] == [1]
    assert {"loss", "train_acc", "val_acc", "lr", "seconds"} <= set(report["training"]["fine-tune"][0])
    for side in ("baseline", "compressed"):  # 5 runs in 5 interleaved rounds
        assert report["latency"][side]["runs"] == 5 and len(report["latency"][side]["rounds"]) == 5
    kinds = [w["kind"] for w in report["warnings"]]
    assert "validation_size" in kinds  # 359 digits cannot resolve 0.5 points
    params = _parsed(report["reproduce"]["command"])
    assert params["budget_macs"] == 20_000_000 and params["epochs"] == 2 and params["warn_accuracy_drop"] == 0.5
    assert {"compressor", "python", "torch", "onnxruntime"} <= set(report["reproduce"]["versions"])
    widths = list(report["architecture"]["widths"])
    assert widths.index("conv1") < widths.index("layer4.1.conv1")  # model order
    # the CLI's last lines: the table, the warnings, the run directory
    lines = result.output.strip().splitlines()
    assert lines[0] == "resnet18 (greedy):" and lines[-1] == f"written to {out}"
    assert any(line.lstrip().startswith("latency p50") and "speed-up" in line for line in lines)
    assert any(line.startswith("  ! 359 validation images") for line in lines)
    # the ONNX file says what it needs, through compress bench
    bench = CliRunner().invoke(main, ["bench", str(out / "model.onnx"), "--target", "cpu", "--runs", "2",
                                      "--warmup", "1", "--out", str(tmp_path / "b.json"), "-q"])
    assert bench.exit_code == 0, bench.output
    meta = json.loads((tmp_path / "b.json").read_text())["model"]["metadata"]
    assert meta["precision"] == "fp32" and meta["input_shape"] == [3, 64, 64] and len(meta["class_names"]) == 10
    html = (out / "report.html").read_text()
    for anchor in ("warnings", "summary", "tradeoff", "training", "search", "architecture", "slowest", "reproduce"):
        assert f'id="{anchor}"' in html, anchor

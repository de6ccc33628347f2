"""The `compress` command end to end on the embedded data, and its one-line user errors."""
import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

import compressor
from compressor.cli import main

FAST = ["--train-resolution", "16", "--input-shape", "3x64x64", "--epochs", "1", "--teacher-epochs", "1",
        "--latency-runs", "5", "--quiet"]
# the default method with fewer scoring images and coarser steps: these tests check the plumbing
# (tests/test_scoring.py checks what greedy chooses)
GREEDY = ["--option", "images=32", "--option", "step=0.2"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    result = invoke("--budget-macs", "20M", "--out", str(out), *FAST, *GREEDY)
    assert result.exit_code == 0, result.output
    return out


def test_run_writes_every_artifact(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {"arch.json", "model.pt", "model.onnx", "baseline.onnx", "report.json", "report.md", "search.json",
            "manifest.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]


def test_manifest_hashes_every_artifact(run_dir):
    import hashlib

    manifest = json.loads((run_dir / "manifest.json").read_text())
    onnx_bytes = (run_dir / "model.onnx").read_bytes()
    assert manifest["artifacts"]["model.onnx"]["sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert set(manifest["artifacts"]) >= {"arch.json", "model.pt", "report.json"}
    assert manifest["inputs"]["model"] == "resnet18" and manifest["inputs"]["budget"]["macs"] == 20_000_000
    assert "torch" in manifest["versions"] and "onnxruntime" in manifest["versions"]


def test_report_fields_and_budget(run_dir):
    r = json.loads((run_dir / "report.json").read_text())
    for key in ("model", "target", "method", "input_shape", "train_resolution", "budget", "baseline",
                "compressed", "onnx", "fixed_layers", "timings_s"):
        assert key in r
    assert r["model"] == "resnet18" and r["method"] == "greedy" and r["target"]["name"] == "cpu"
    assert r["input_shape"] == [3, 64, 64] and r["train_resolution"] == 16
    assert r["budget"] == {"macs": 20_000_000, "params": None, "latency_ms": None}
    assert r["compressed"]["macs"] <= 20_000_000 < r["baseline"]["macs"]
    assert r["compressed"]["params"] < r["baseline"]["params"]
    for side in ("baseline", "compressed"):
        assert 0.0 <= r[side]["accuracy"] <= 1.0
        lat = r[side]["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert r["onnx"]["opset"] >= 17 and r["onnx"]["max_abs_diff"] < 1e-4
    assert {"data", "model", "search", "fine_tuning", "export", "latency"} <= set(r["timings_s"])
    assert "| MACs |" in (run_dir / "report.md").read_text()


def test_saved_model_loads_and_matches_onnx(run_dir):
    model = compressor.load(run_dir)
    r = json.loads((run_dir / "report.json").read_text())
    from compressor.counting import count_macs
    assert count_macs(model, (3, 64, 64)) == r["compressed"]["macs"]
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(run_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4


def test_second_run_into_same_dir_refused(run_dir):
    result = invoke("--budget-macs", "20M", "--out", str(run_dir), *FAST)
    assert result.exit_code == 2 and "not empty" in result.output


@pytest.mark.slow
def test_budget_above_model_keeps_it(tmp_path):
    result = invoke("--budget-macs", "10G", "--out", str(tmp_path / "r"), "--method", "uniform", *FAST)
    assert result.exit_code == 0, result.output
    r = json.loads((tmp_path / "r" / "report.json").read_text())
    assert r["compressed"]["macs"] == r["baseline"]["macs"]
    assert any("already meets the budget" in n for n in r["notes"])


def test_inspect_json():
    result = invoke("inspect", "--model", "resnet18", "--input-shape", "3x64x64", "--json")
    assert result.exit_code == 0
    info = json.loads(result.output)
    import torchvision

    from compressor.counting import count_macs
    assert info["macs"] == count_macs(torchvision.models.resnet18(), (3, 64, 64))
    assert len(info["blocks"]) == 5 and info["classifier"] == "fc"


@pytest.mark.parametrize("args, message", [
    (["--budget-macs", "300X"], "is not a count"),
    (["--budget-macs", "-5M"], "is not a count"),
    (["--budget-macs", "0"], "at least 1"),
    (["--target", "cpu"], "no budget given"),
    (["--budget-macs", "300M", "--model", "resnet1000"], "unknown model"),
    (["--budget-macs", "300M", "--model", "no_such_pkg.mod:fn"], "cannot import"),
    (["--budget-latency", "4ms", "--target", "gpu"], "none of them is usable on this machine"),
    (["--budget-macs", "300M", "--target", "tpu"], "unknown target"),
    (["--budget-macs", "300M", "--input-shape", "224x224"], "is not CxHxW"),
    (["--budget-macs", "300M", "--data", "/no/such/dir"], "does not exist"),
    (["--budget-macs", "1K", "--input-shape", "3x64x64"], "below the smallest architecture"),
    (["--budget-macs", "300M", "--weights", "/no/such/file.pt"], "does not exist"),
])
def test_user_errors_exit_2_with_one_line(args, message, tmp_path):
    result = invoke(*args, "--out", str(tmp_path / "out"), "--teacher-epochs", "0", "--epochs", "0", "-q")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_process_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "compressor", "--budget-macs", "300X"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_tas_method_end_to_end(tmp_path):
    out = tmp_path / "tas"
    result = invoke("--method", "tas", "--budget-macs", "40M", "--search-epochs", "1", "--option", "steps_per_epoch=3",
                    "--option", "refine_images=32", "--out", str(out), *FAST)
    assert result.exit_code == 0, result.output
    r = json.loads((out / "report.json").read_text())
    assert r["method"] == "tas" and r["compressed"]["macs"] <= 40_000_000
    assert json.loads((out / "search.json").read_text())["method"] == "tas"


@pytest.mark.slow
def test_nas_shrinkcnn_end_to_end(tmp_path):
    out = tmp_path / "nas"
    result = invoke("nas", "--budget-macs", "12M", "--train-resolution", "16", "--input-shape", "3x32x32",
                    "--epochs", "1", "--latency-runs", "5", "--out", str(out), "-q",
                    "--option", "k=2", "--option", "epochs=1", "--option", "max_steps=1",
                    "--option", "train_images=128", "--option", "val_images=64")
    assert result.exit_code == 0, result.output
    r = json.loads((out / "report.json").read_text())
    assert r["compressed"]["macs"] <= 12_000_000 and r["onnx"]["max_abs_diff"] < 1e-4
    snapshots = json.loads((out / "search.json").read_text())["snapshots"]
    assert len(snapshots[-1]["edges"]) < 28  # one shrink step removed at least one edge
    # the report: the deployed network's training curve, and the command that runs it again
    assert [e["epoch"] for e in r["training"]["deployed network"]] == [1]
    command = r["reproduce"]["command"]
    assert command.startswith("compress nas --budget-macs 12000000 ") and "--option max_steps=1" in command
    html = (out / "report.html").read_text()
    assert 'id="training"' in html and 'id="reproduce"' in html
    model = compressor.load(out)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_bench_writes_json(run_dir, tmp_path):
    out = tmp_path / "bench.json"
    result = invoke("bench", str(run_dir / "model.onnx"), "--target", "cpu", "--runs", "5", "--warmup", "1",
                    "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["runtime"] == "onnxruntime-cpu" and data["stats"]["runs"] == 5
    assert data["stats"]["input_shape"] == [3, 64, 64]  # the model's own static shape


def test_engine_without_tensorrt_is_a_clear_error(run_dir):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here; the error path is for machines without it")
    except ImportError:
        pass
    result = invoke("engine", str(run_dir / "model.onnx"), "-q")
    assert result.exit_code == 2 and "TensorRT is not installed" in result.output
    assert not (run_dir / "model.engine").exists()


def test_report_merges_a_run_and_a_device_bench(run_dir, tmp_path):
    bench = tmp_path / "device.bench.json"
    assert invoke("bench", str(run_dir / "model.onnx"), "--target", "cpu", "--runs", "3", "--warmup", "0",
                  "--out", str(bench), "-q").exit_code == 0
    out = tmp_path / "merged"
    result = invoke("report", str(run_dir), str(bench), "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    merged = json.loads((out / "merged.json").read_text())
    assert len(merged["runs"]) == 1 and not merged["unmatched"]
    p50 = json.loads(bench.read_text())["stats"]["p50"]
    text = (out / "report.md").read_text()  # to the digits its spread supports (test_merge.py checks which)
    assert any(f"| {p50:.{d}f} |" in text for d in (1, 2, 3)), text
    assert "<img" in (out / "report.html").read_text()
    assert (run_dir / "report.html").is_file()  # every run writes its HTML page too


@pytest.mark.slow
def test_latency_budget_end_to_end(tmp_path):
    """--budget-latency: a table measured here, a search on predicted latency, a measured check."""
    out, table = tmp_path / "lat", tmp_path / "table.json"
    result = invoke("--budget-latency", "0.4ms", "--latency-table", str(table), "--out", str(out), *FAST, *GREEDY)
    assert result.exit_code == 0, result.output
    r = json.loads((out / "report.json").read_text())
    assert r["budget"]["latency_ms"] == 0.4
    checks = r["latency_check"]
    assert checks and all(c["measured_ms"] > 0 for c in checks)
    assert checks[-1]["predicted_ms"] <= 0.4 * 1.0001  # the prediction the search obeyed
    assert table.is_file() and (out / "latency_model.json").is_file()
    assert "latency_ms <= 0.4 ms" in (out / "report.md").read_text()

"""The three sizes of a run (issue 11): accuracy is the shipped artifact's, at the deployment shape,
whenever the user gives data or weights; the ONNX file's accuracy equals PyTorch's on the same
images; the trained teacher is kept and reused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from compress_base.errors import CompressError
from compressor.budget import Budget
from compressor.cli import main
from compressor.resolution import proxy_note, resolve
from compressor.run_report import RunReport
from compressor.settings import RunConfig
from exporters.onnx_eval import add_metadata, onnx_correct, read_metadata
from exporters.onnx_export import export_onnx


def _config(**kw) -> RunConfig:
    return RunConfig(budget=Budget(macs=10**7), **kw)


@pytest.mark.parametrize("kw,expected", [
    ({}, 32),  # the digits demo keeps its proxy
    ({"data": "/d"}, 64),  # the user's images: the deployment size
    ({"weights": "DEFAULT"}, 64),
    ({"data": "/d", "eval_resolution": 48}, 48),  # asked for explicitly
])
def test_evaluation_resolution_policy(kw, expected):
    res = resolve(_config(train_resolution=32, **kw), (3, 64, 64))
    assert (res.search, res.evaluation, res.deployment) == (32, expected, (3, 64, 64))
    assert res.at_deployment == (expected == 64)
    assert (proxy_note(res) is None) == res.at_deployment


def test_a_non_square_deployment_needs_an_explicit_side():
    with pytest.raises(CompressError, match="not square: give --eval-resolution"):
        resolve(_config(data="/d"), (3, 64, 48))
    assert resolve(_config(data="/d", eval_resolution=48), (3, 64, 48)).evaluation == 48


def test_onnx_accuracy_equals_pytorch_on_the_same_images(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    path = export_onnx(model, (3, 16, 16), tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((8, 3, 16, 16)).astype(np.float32), rng.integers(0, 4, 8)) for _ in range(5)]
    with torch.no_grad():
        expected = sum(int((model(torch.from_numpy(x)).argmax(1).numpy() == y).sum()) for x, y in batches)
    assert onnx_correct(path, batches) == (expected, 40)
    add_metadata(path, {"class_names": ["a", "b", "c", "d"], "note": "x"})
    assert read_metadata(path) == {"class_names": '["a", "b", "c", "d"]', "note": "x"}
    assert onnx_correct(path, batches) == (expected, 40)  # the metadata changes nothing else


def _image_folder(root, size=20, per_class=12):
    rng = np.random.default_rng(0)
    for c, tint in (("cat", 0), ("dog", 255)):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8) + np.uint8(tint // 2)
            Image.fromarray(img).save(root / c / f"{i}.png")
    return root


@pytest.mark.slow
def test_with_data_the_report_gives_the_exported_models_accuracy_and_keeps_the_teacher(tmp_path):
    data = _image_folder(tmp_path / "data")
    args = ["--data", str(data), "--input-shape", "3x32x32", "--train-resolution", "16", "--budget-macs", "15M",
            "--teacher-epochs", "1", "--epochs", "1", "--latency-runs", "2", "-q"]
    first = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert RunReport.from_dict(report).to_dict() == report  # version 3 reads back as written
    assert report["resolution"] == {"deployment": [3, 32, 32], "search": 16, "evaluation": 32}
    exported = report["exported_accuracy"]
    assert exported["images"] == report["data"]["val"]
    assert exported["compressed_onnx"] == exported["compressed_pytorch"] == report["compressed"]["accuracy"]
    assert exported["baseline_onnx"] == exported["baseline_pytorch"] == report["baseline"]["accuracy"]
    assert "exported ONNX at 3x32x32" in first.output
    meta = read_metadata(tmp_path / "a" / "model.onnx")
    assert json.loads(meta["class_names"]) == ["cat", "dog"] and json.loads(meta["input_shape"]) == [3, 32, 32]
    preprocess = json.loads(meta["preprocess"])  # what a deployer must feed the file, also in report.json
    assert preprocess == report["preprocess"] and preprocess["mean"] == [0.485, 0.456, 0.406]
    assert preprocess["at_input_size"] == {"size": 32, "steps": "resize to 32x32"}
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())["artifacts"]
    assert "teacher.pt" in manifest
    # a later run takes that teacher instead of training one
    second = CliRunner().invoke(main, [*args, "--weights", str(tmp_path / "a"), "--out", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    again = json.loads((tmp_path / "b" / "report.json").read_text())
    assert "teacher_training" not in again["timings_s"] and "teacher.pt" not in json.loads(
        (tmp_path / "b" / "manifest.json").read_text())["artifacts"]
    assert again["baseline"]["accuracy"] == report["baseline"]["accuracy"]


def test_weights_folder_without_a_teacher_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["--budget-macs", "15M", "--weights", str(tmp_path / "empty"), "-q",
                                       "--teacher-epochs", "0", "--epochs", "0", "--input-shape", "3x32x32",
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "is a folder without teacher.pt" in result.stderr
    assert not (tmp_path / "r").exists()

"""compressor.compress (issue 14): a model held in memory with the caller's own DataLoaders, end to
end; bad arguments are one CompressError before any work; a board target with a MAC budget runs on
this machine and says latency was not measured there."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import compressor
from compress_base.errors import CompressError
from compressor.cli import main
from compressor.counting import count_macs
from exporters.onnx_eval import onnx_correct


class TinyNet(nn.Module):
    """conv-bn-relu x2, pooled, linear: two prunable channel groups."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                      nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def _loaders(n=96, side=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 3, side, side, generator=g) + y.view(-1, 1, 1, 1).float()  # learnable: the mean tells
    train = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    val = DataLoader(TensorDataset(x[64:], y[64:]), batch_size=16)
    return train, val


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    torch.manual_seed(0)
    train, val = _loaders()
    out = tmp_path_factory.mktemp("api") / "run"
    res = compressor.compress(TinyNet(), train_loader=train, val_loader=val, example_input=torch.randn(1, 3, 16, 16),
                              macs="50%",  # of the original's MACs
                              epochs=1, teacher_epochs=0, latency_runs=2, quiet=True, out=str(out))
    return res, val


def test_compress_returns_the_compressed_module_and_its_report(result):
    res, val = result
    full = count_macs(TinyNet(), (3, 16, 16))
    macs = count_macs(res.model, (3, 16, 16))
    assert macs == res.report.compressed.macs < full and res.report.baseline.macs == full
    assert res.report.budget["macs"] == full // 2 and macs <= full // 2  # "50%", resolved against the original
    assert res.report.model == f"{TinyNet.__module__}:TinyNet"  # the class path, for information
    assert {"model.onnx", "model.pt", "arch.json", "report.json", "report.html", "manifest.json"} <= set(res.paths)
    # the report's accuracy is the exported ONNX model's, equal to the returned module's in PyTorch
    batches = [(x.numpy(), y.numpy()) for x, y in val]
    correct, seen = onnx_correct(res.paths["model.onnx"], batches)
    with torch.no_grad():
        torch_correct = sum(int((res.model(x).argmax(1) == y).sum()) for x, y in val)
    assert res.report.compressed.accuracy == correct / seen == torch_correct / seen
    assert res.report.exported_accuracy.images == seen == 32


def test_the_run_directory_does_not_let_the_class_path_be_imported(result):
    res, _ = result
    spec = json.loads(res.paths["arch.json"].read_text())["fingerprint"]["spec"]
    assert spec["name"] == f"{TinyNet.__module__}:TinyNet"
    with pytest.raises(CompressError, match="model_fn"):
        compressor.load(res.out)
    again = compressor.load(res.out, model_fn=TinyNet)  # the caller supplies the builder
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(again(x), res.model(x), atol=1e-5)


@pytest.mark.parametrize("kwargs,message", [
    ({"model": "resnet18"}, "takes an nn.Module as model"),
    ({"train_loader": [1, 2]}, "takes a torch DataLoader as train_loader"),
    ({"example_input": None}, "needs the deployment input"),
    ({"macs": None}, "no budget given"),
    ({"macs": -3}, "budget"),
    ({"epochs": "five"}, "setting 'epochs' must be an integer"),
    ({"method": "nope"}, "setting 'method'"),
])
def test_bad_arguments_are_one_error_before_any_work(tmp_path, kwargs, message):
    train, val = _loaders()
    args = {"model": TinyNet(), "train_loader": train, "val_loader": val, "example_input": torch.randn(1, 3, 16, 16),
            "macs": 2_500_000, "out": str(tmp_path / "r"), "quiet": True, **kwargs}
    model = args.pop("model")
    with pytest.raises(CompressError, match=message) as info:
        compressor.compress(model, **args)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_board_target_with_a_mac_budget_runs_here_and_says_latency_was_not_measured(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["--target", "jetson-orin-nano", "--budget-macs", "20M", "--input-shape",
                                       "3x32x32", "--train-resolution", "16", "--teacher-epochs", "0", "--epochs",
                                       "0", "-q", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["latency"] == {"compressed": None, "baseline": None} and report["compressed"]["macs"] <= 20_000_000
    assert any("latency was not measured" in n and "compress bench" in n for n in report["notes"])
    assert "latency to be measured on the target" in result.output


def test_an_interrupted_call_resumes_with_the_same_call(tmp_path, monkeypatch):
    from compressor import artifact

    train, val = _loaders()
    args = {"train_loader": train, "val_loader": val, "input_shape": "3x16x16", "epochs": 1, "teacher_epochs": 0,
            "latency_runs": 2, "quiet": True, "out": str(tmp_path / "r")}
    real = artifact.save

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifact, "save", interrupted)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        compressor.compress(TinyNet(), macs="50%", **args)
    assert (tmp_path / "r" / ".compress" / "run.json").is_file()  # kept for the resume
    monkeypatch.setattr(artifact, "save", real)
    torch.manual_seed(0)
    res = compressor.compress(TinyNet(), resume=True, **args)
    assert res.report.compressed.macs <= res.report.baseline.macs // 2
    with pytest.raises(CompressError, match="has finished already"):
        compressor.compress(TinyNet(), resume=True, **args)

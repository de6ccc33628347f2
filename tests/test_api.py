"""compressor.compress (issue 14): a model held in memory with the caller's own DataLoaders, end to
end; bad arguments are one CompressError before any work; a board target with a MAC budget runs on
this machine and says latency was not measured there."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

import compressor
from compress_base.errors import CompressError
from compressor import api
from compressor.budget import Budget
from compressor.cli import main
from compressor.counting import count_macs
from compressor.settings import RunConfig, resume_config
from compressor.stages.reporting import python_call
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
    assert res.report.settings["in_memory"] == ["model", "data"]  # run.json's settings: it came from Python
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
    ({"model": 3}, "takes an nn.Module or a model name as model"),
    ({"model": "resnet18"}, "needs num_classes=: the loaders' dataset has no classes list"),
    ({"model": "resnet18", "trained": False}, "trained= is for an nn.Module"),
    ({"train_loader": [1, 2]}, "takes a torch DataLoader as train_loader"),
    ({"val_loader": None}, "takes a torch DataLoader as val_loader"),
    ({"train_loader": None, "val_loader": None}, "needs data: train_loader= and val_loader="),
    ({"data": "somewhere"}, "either train_loader= and val_loader= or data="),
    ({"data": 7, "train_loader": None, "val_loader": None}, "takes a folder path as data"),
    ({"epohcs": 2}, "has no setting 'epohcs'"),
    ({"in_memory": ["data"]}, "has no setting 'in_memory'"),
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


def _interrupted(monkeypatch, model, **kwargs) -> Path:
    """The run directory of a compress() call interrupted as its first stage starts (run.json written)."""
    def stopping(*_):
        def make(config, out):
            raise KeyboardInterrupt
        return make

    with monkeypatch.context() as m:
        m.setattr(api, "_state_maker", stopping)
        with pytest.raises(KeyboardInterrupt):
            compressor.compress(model, quiet=True, **kwargs)
    return Path(kwargs["out"])


@pytest.mark.parametrize("case,held,message", [
    ("module+loaders", ["model", "data"], "with its model and its DataLoaders in memory (its class path"),
    ("module+folder", ["model"], "with its model in memory (its class path"),
    ("name+loaders", ["data"], "with its DataLoaders in memory: continue"),
])
def test_a_cli_resume_of_a_compress_run_is_one_line_pointing_to_the_python_call(tmp_path, monkeypatch, case,
                                                                                 held, message):
    train, val = _loaders()
    model = "resnet20" if case.startswith("name") else TinyNet()
    data = {"data": str(_image_folder(tmp_path / "images"))} if case.endswith("folder") else \
        {"train_loader": train, "val_loader": val}
    out = _interrupted(monkeypatch, model, input_shape="3x16x16", macs="50%", num_classes=3 if "name" in case else None,
                       out=str(tmp_path / "r"), **data)
    saved = json.loads((out / ".compress" / "run.json").read_text())
    assert saved["in_memory"] == held
    assert saved["model"] == ("resnet20" if "name" in case else f"{TinyNet.__module__}:TinyNet")
    for trust in ([], ["--trust-code"]):  # trusting the folder does not make the class path a builder
        outcome = CliRunner().invoke(main, ["--resume", str(out), *trust])
        assert outcome.exit_code == 2, outcome.output
        line = outcome.output.strip()
        assert "\n" not in line and line.startswith("error: ") and message in line, line
        assert f"made by compressor.compress() {message}" in line
        assert line.endswith(f"compressor.compress(..., out={str(out)!r}, resume=True)")
    # a call holding something else is refused too, before the run imports or reads anything
    other = {"data": str(tmp_path)} if held == ["model", "data"] else {"train_loader": train, "val_loader": val}
    gives = "its model" if held == ["model", "data"] else "its model and its DataLoaders"
    with pytest.raises(CompressError, match=f"this call gives {gives}: make the call that started it"):
        compressor.compress(TinyNet(), input_shape="3x16x16", out=str(out), resume=True, **other)


def test_a_run_of_a_name_and_a_folder_resumes_from_the_command_line(tmp_path, monkeypatch):
    folder = _image_folder(tmp_path / "images")
    out = _interrupted(monkeypatch, "resnet20", data=folder, macs="50%", out=str(tmp_path / "r"))
    config = resume_config(str(out), given={"data": str(folder)})  # nothing in memory: --resume continues it
    assert config.in_memory is None and config.data == str(folder.absolute()) and config.model == "resnet20"
    with pytest.raises(CompressError, match="was made with no model or loaders in memory, this call gives its "
                                            "model: make the call that started it, or continue it with `compress"):
        compressor.compress(TinyNet(), data=folder, input_shape="3x32x32", out=str(out), resume=True)
    with pytest.raises(CompressError, match="made with the model resnet20, this call gives resnet32"):
        compressor.compress("resnet32", data=folder, out=str(out), resume=True)
    other = type("Other", (TinyNet,), {})
    out = _interrupted(monkeypatch, TinyNet(), data=folder, input_shape="3x16x16", macs="50%", out=str(tmp_path / "m"))
    with pytest.raises(CompressError, match="made with the model .*:TinyNet, this call gives .*:Other"):
        compressor.compress(other(), data=folder, input_shape="3x16x16", out=str(out), resume=True)


def test_the_reproduce_block_is_the_call_with_the_runs_settings(result):
    res, _ = result
    command = res.report.reproduce.command
    assert command.startswith("compressor.compress(model, train_loader=train_loader, val_loader=val_loader, ")
    assert "compress run" not in command and "your " + f"{TinyNet.__module__}:TinyNet" in command
    # run as Python, it makes the same settings (the budget resolved from "50%" to a count)
    seen = {}
    fake = type("fake", (), {"compress": staticmethod(lambda model, **kw: seen.update(model=model, **kw))})
    eval(command.split("  #")[0], {"compressor": fake, "model": "M", "train_loader": "T", "val_loader": "V"})
    assert seen.pop("model") == "M" and (seen.pop("train_loader"), seen.pop("val_loader")) == ("T", "V")
    assert seen.pop("macs") == res.report.budget["macs"]
    again = RunConfig(budget=Budget(macs=1), model=res.report.model, in_memory=["model", "data"], **seen)
    mine = {k: v for k, v in res.report.settings.items() if k not in ("out", "quiet")}
    assert {k: v for k, v in again.settings().items() if k not in ("out", "quiet")} == mine
    assert python_call(again, {"macs": 5}, trained=False).endswith(
        f"trained=False)  # model is your {TinyNet.__module__}:TinyNet (as given, before compression); train_loader "
        "and val_loader are your DataLoaders")


def test_a_module_as_the_model_setting_is_one_line_naming_its_type():
    with pytest.raises(CompressError) as info:
        RunConfig(budget=Budget(macs=5), model=TinyNet())
    message = str(info.value)
    assert "\n" not in message and len(message) < 200
    assert "got a TinyNet object" in message and "compressor.compress(model, ...)" in message


def _image_folder(root, classes=("cat", "dog"), per_class=10, side=16):
    """A tiny ImageFolder tree: class i's images tinted by i."""
    rng = np.random.default_rng(0)
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            pixels = rng.integers(0, 100, (side, side, 3), dtype=np.uint8) + np.uint8(120 * i)
            Image.fromarray(pixels).save(root / name / f"{k}.png")
    return root


TINYMOD = """
from torch import nn

def build(num_classes=None):
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes or 10))
"""
FAST = {"epochs": 1, "teacher_epochs": 0, "train_resolution": 16, "latency_runs": 2, "quiet": True}


def test_a_model_name_and_a_data_path_run_as_compress_run_does(tmp_path, monkeypatch):
    (tmp_path / "tinymod_api.py").write_text(TINYMOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = _image_folder(tmp_path / "images")
    out = tmp_path / "run"
    res = compressor.compress("tinymod_api:build", data=folder, input_shape="3x16x16", macs="50%", out=str(out),
                              **FAST)
    report = res.report
    assert report.model == "tinymod_api:build" and report.data.num_classes == 2
    assert report.data.source == str(folder.absolute())
    full = count_macs(importlib.import_module("tinymod_api").build(2), (3, 16, 16))
    assert report.baseline.macs == full and count_macs(res.model, (3, 16, 16)) == report.compressed.macs <= full // 2
    assert report.settings["in_memory"] is None and report.settings["data"] == str(folder.absolute())
    # nothing was held in memory: the command line reproduces it
    assert report.reproduce.command.startswith("compress run --budget-macs ")
    assert f"--model tinymod_api:build --data {folder.absolute()}" in report.reproduce.command


def test_a_module_with_a_data_path_and_a_name_with_loaders(tmp_path):
    folder = _image_folder(tmp_path / "images", classes=("a", "b", "c"), per_class=8)
    res = compressor.compress(TinyNet(), data=folder, input_shape="3x16x16", macs="50%", out=str(tmp_path / "m"),
                              **FAST)
    assert res.report.data.num_classes == 3 and res.report.data.source == str(folder.absolute())
    assert res.report.settings["in_memory"] == ["model"]
    assert res.report.reproduce.command.startswith(f"compressor.compress(model, macs={res.report.budget['macs']}, "
                                                   f"data={str(folder.absolute())!r}, ")

    with pytest.raises(CompressError, match="the model has 3 outputs and the data have 2 classes") as info:
        compressor.compress(TinyNet(), data=_image_folder(tmp_path / "two"), input_shape="3x16x16", macs="50%",
                            out=str(tmp_path / "bad"), **FAST)
    assert "\n" not in str(info.value) and not (tmp_path / "bad").exists()

    train, val = _loaders()
    res = compressor.compress("resnet20", train_loader=train, val_loader=val, num_classes=3, macs="50%",
                              out=str(tmp_path / "n"), **FAST)
    assert res.report.model == "resnet20" and res.report.data.num_classes == 3
    assert res.report.input_shape == [3, 32, 32]  # a CIFAR ResNet's native input; the loaders' 16x16 to train at
    assert res.report.settings["in_memory"] == ["data"]
    assert res.report.reproduce.command.startswith("compressor.compress('resnet20', train_loader=train_loader, ")
    assert count_macs(res.model, (3, 32, 32)) == res.report.compressed.macs <= res.report.baseline.macs // 2


def test_a_named_models_classes_come_from_num_classes_or_the_datasets_classes():
    dataset = TensorDataset(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
    dataset.classes = ["cat", "dog"]  # as an ImageFolder or a torchvision dataset lists them
    assert api.named_classes(Subset(Subset(dataset, [0, 1, 2]), [0]), None, "resnet20") == ["cat", "dog"]
    assert api.named_classes(dataset, 3, "resnet20") == ["0", "1", "2"]  # num_classes rules
    assert api.named_classes(dataset, 2, "resnet20") == ["cat", "dog"]

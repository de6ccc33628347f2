"""ONNX export: parity with PyTorch, dynamic batch, atomic writes, opset, user errors."""
import errno
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from torch import nn

from compress_base.errors import CompressError
from compress_base.fileio import write_atomic
from exporters import onnx_export
from exporters.onnx_export import export_onnx, random_input, verify_onnx


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    ).eval()


class Unexportable(nn.Module):
    """Uses an operator the ONNX exporter has no translation for."""

    def forward(self, x):
        return torch.special.bessel_j0(x).flatten(1)


class FixedBatch(nn.Module):
    """Hard-codes batch 1 in its forward: exports, but fails at any other batch."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(x.view(1, -1))


class TupleOut(nn.Module):
    def forward(self, x):
        return x, x


def _onnx_files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    "make, shape",
    [
        (tiny_cnn, (3, 16, 16)),
        (lambda: torchvision.models.resnet18(weights=None, num_classes=10), (3, 32, 32)),
        (lambda: torchvision.models.mobilenet_v3_small(weights=None, num_classes=10), (3, 64, 64)),
    ],
    ids=["tiny_cnn", "resnet18", "mobilenet_v3_small"],
)
def test_export_matches_pytorch(tmp_path, make, shape):
    torch.manual_seed(0)
    model = make().eval()
    path = export_onnx(model, shape, tmp_path / "model.onnx")
    result = verify_onnx(model, path, shape)
    assert result["checker"] == "passed"
    assert result["opset"] == 17
    assert result["batch"] == 2
    assert result["max_abs_diff"] < 1e-4


def test_batch_axis_is_dynamic(tmp_path):
    path = export_onnx(tiny_cnn(), (3, 16, 16), tmp_path / "model.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        (out,) = session.run(None, {"input": random_input((3, 16, 16), batch).numpy()})
        assert out.shape == (batch, 10)


@pytest.mark.parametrize("opset", [17, 18])
def test_opset_is_recorded(tmp_path, opset):
    path = export_onnx(tiny_cnn(), (3, 16, 16), tmp_path / "model.onnx", opset=opset)
    versions = {o.domain: o.version for o in onnx.load(str(path)).opset_import}
    assert versions[""] == opset
    assert verify_onnx(tiny_cnn(), path, (3, 16, 16))["opset"] == opset


@pytest.mark.parametrize("opset", [16, 21])
def test_unsupported_opset_is_a_user_error(tmp_path, opset):
    with pytest.raises(CompressError, match="opset"):
        export_onnx(tiny_cnn(), (3, 16, 16), tmp_path / "model.onnx", opset=opset)
    assert _onnx_files(tmp_path) == []


def test_written_atomically_and_self_contained(tmp_path):
    path = export_onnx(tiny_cnn(), (3, 16, 16), tmp_path / "out" / "model.onnx")
    assert path == tmp_path / "out" / "model.onnx"
    assert _onnx_files(path.parent) == ["model.onnx"]
    proto = onnx.load(str(path), load_external_data=False)
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in proto.graph.initializer)


def test_failed_export_leaves_no_file_and_keeps_old_one(tmp_path):
    with pytest.raises(CompressError) as err:
        export_onnx(Unexportable(), (3, 4, 4), tmp_path / "new.onnx")
    msg = str(err.value)
    assert "\n" not in msg and "Unexportable" in msg and "bessel_j0" in msg
    assert _onnx_files(tmp_path) == []

    old = tmp_path / "old.onnx"
    old.write_bytes(b"previous export")
    with pytest.raises(CompressError):
        export_onnx(Unexportable(), (3, 4, 4), old)
    assert old.read_bytes() == b"previous export"
    assert _onnx_files(tmp_path) == ["old.onnx"]


def _disk_full_at(name: str):
    """The atomic write ``export_onnx`` uses, except that writing a file called ``name`` stops half way
    with ENOSPC, as on a full disk (the temporary file exists and holds part of the model)."""

    def write(path, writer):
        if Path(path).name != name:
            return write_atomic(path, writer)

        def half_then_full(tmp):
            writer(tmp)
            tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

        return write_atomic(path, half_then_full)

    return write


def test_full_disk_is_a_write_error_not_an_export_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "write_atomic", _disk_full_at("model.onnx"))
    old = tmp_path / "model.onnx"
    old.write_bytes(b"previous export")
    with pytest.raises(OSError) as err:  # the caller knows the folder and how to go on (see below)
        export_onnx(tiny_cnn(), (3, 16, 16), old)
    assert err.value.errno == errno.ENOSPC and not isinstance(err.value, CompressError)
    assert old.read_bytes() == b"previous export"
    assert _onnx_files(tmp_path) == ["model.onnx"]  # no partial temporary file


@pytest.mark.slow
def test_full_disk_writing_model_onnx_is_one_line_with_the_remedy(tmp_path, monkeypatch):
    """Through `compress`: one error line that names the disk and how to continue, no partial file."""
    from click.testing import CliRunner

    from compressor.cli import main

    monkeypatch.setattr(onnx_export, "write_atomic", _disk_full_at("model.onnx"))
    out = tmp_path / "r"
    result = CliRunner().invoke(main, ["--teacher-epochs", "0", "--epochs", "0", "-q", "--input-shape", "3x32x32",
                                       "--train-resolution", "16", "--latency-runs", "2", "--budget-macs", "15M",
                                       "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot write to the run directory {out} (No space left on device): free space or "
                      f"make it writable, then continue with `compress --resume {out}`"], result.stderr
    assert not (out / "model.onnx").exists() and not list(out.rglob("*.tmp"))
    assert (out / ".compress" / "run.json").is_file()  # kept for --resume


def test_non_tensor_output_is_a_user_error(tmp_path):
    with pytest.raises(CompressError, match="TupleOut.forward returns tuple"):
        export_onnx(TupleOut(), (3, 4, 4), tmp_path / "model.onnx")
    assert _onnx_files(tmp_path) == []


def test_wrong_input_shape_is_a_user_error(tmp_path):
    with pytest.raises(CompressError, match="fails on an input of shape"):
        export_onnx(tiny_cnn(), (4, 16, 16), tmp_path / "model.onnx")
    with pytest.raises(CompressError, match="input shape"):
        export_onnx(tiny_cnn(), (3, 0, 16), tmp_path / "model.onnx")


def test_hard_coded_batch_is_caught_by_verify(tmp_path):
    model = FixedBatch().eval()
    path = export_onnx(model, (3, 4, 4), tmp_path / "model.onnx")
    with pytest.raises(CompressError, match="at batch 2") as err:
        verify_onnx(model, path, (3, 4, 4))
    assert "\n" not in str(err.value)


def test_training_mode_is_restored(tmp_path):
    model = tiny_cnn().train()
    path = export_onnx(model, (3, 16, 16), tmp_path / "model.onnx")
    verify_onnx(model, path, (3, 16, 16))
    assert model.training and all(m.training for m in model.modules())


def test_verify_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(CompressError, match="does not exist"):
        verify_onnx(tiny_cnn(), tmp_path / "missing.onnx", (3, 16, 16))


def test_random_input_is_seeded():
    a, b = random_input((3, 8, 8), 2, seed=1), random_input((3, 8, 8), 2, seed=1)
    assert a.shape == (2, 3, 8, 8) and torch.equal(a, b)
    assert not np.array_equal(a.numpy(), random_input((3, 8, 8), 2, seed=2).numpy())
    with pytest.raises(CompressError, match="batch"):
        random_input((3, 8, 8), 0)


def test_cuda_model_is_a_user_error(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine; the CUDA-model check needs a GPU")
    with pytest.raises(CompressError, match=r"model\.cpu\(\)"):
        export_onnx(tiny_cnn().cuda(), (3, 16, 16), tmp_path / "model.onnx")

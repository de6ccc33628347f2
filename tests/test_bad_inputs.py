"""Every bad input to `compress` is one `error:` line on stderr, exit code 2, no traceback, no leftovers.

Each case runs the real CLI (in process through click's CliRunner, a few in a real subprocess) on
fixture files built once per session: a tiny ImageFolder of generated PNGs, state_dict files,
broken checkpoints, profile TOML files, user model modules. After each case the test's own
tmp_path and the fixture folder must be exactly as before: no run directory, no parent folders
the run created, no temporary files.

docs/ERRORS.md lists every message.
"""
from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from compressor.cli import main

REPO = Path(__file__).resolve().parents[1]

# Anything that gets past argument parsing stays cheap: no teacher training, no fine-tuning, a small
# deployment shape and proxy resolution. Case arguments come after these, so they can override them.
FAST = ["--teacher-epochs", "0", "--epochs", "0", "-q", "--input-shape", "3x64x64", "--train-resolution", "16"]

MODELS_PY = '''
import torch
from torch import nn


def not_module(num_classes=10):
    return 42


class FixedSize(nn.Module):
    """Runs only on 3x64x64 inputs: the linear layer is sized for it."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 64 * 64, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def fixed_size(num_classes=10):
    return FixedSize(num_classes)


def needs_args(depth, num_classes=10):
    return FixedSize(num_classes)
'''


def _png(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)


def build_fixtures(root: Path) -> Path:
    """Write every fixture file under ``root`` (also used to regenerate docs/ERRORS.md)."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(25):  # 5 validation images per class: few enough to be cheap, enough not to be warned of
            _png(root / "good" / cls / f"{i}.png", rng)
            _png(root / "garbage" / cls / f"{i}.png", rng)
    (root / "garbage" / "b" / "broken.png").write_bytes(b"this is not a PNG file\n" * 20)
    for i in range(4):
        _png(root / "one_class" / "cat" / f"{i}.png", rng)
    (root / "empty").mkdir()
    (root / "no_images" / "a").mkdir(parents=True)
    (root / "no_images" / "b").mkdir(parents=True)
    (root / "a_file").write_text("not a folder\n")
    (root / "nonempty").mkdir()
    (root / "nonempty" / "keep.txt").write_text("from an earlier run\n")

    # Checkpoints: another architecture's state_dict, a whole pickled module, garbage, a cut zip.
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    torch.save(other.state_dict(), root / "other_arch.pt")
    torch.save(other, root / "pickled_module.pt")
    (root / "random_bytes.pt").write_bytes(random.Random(0).randbytes(4096))
    whole = (root / "other_arch.pt").read_bytes()
    (root / "truncated.pt").write_bytes(whole[: len(whole) // 2])

    head = 'name = "mine"\ndevice = "cpu"\nruntimes = ["onnxruntime-cpu"]\n'
    (root / "syntax.toml").write_text(head + "input_shape = [3, 64, 64\nchannel_multiple = 8\n")
    (root / "missing_field.toml").write_text(head + "channel_multiple = 8\n")
    (root / "wrong_type.toml").write_text(head + 'input_shape = [3, 64, 64]\nbatch = "one"\n')

    (root / "model.onnx").write_bytes(b"not really onnx, but TensorRT is checked first\n")
    (root / "model.txt").write_text("a model in an unknown format\n")

    (root / "bad_inputs_models.py").write_text(MODELS_PY)
    (root / "bad_inputs_broken.py").write_text("def build(:\n    pass\n")
    return root


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    root = build_fixtures(tmp_path_factory.mktemp("bad_inputs_fixtures"))
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))  # the user model modules: --model bad_inputs_models:...
        yield root


def _tree(*roots: Path) -> set[str]:
    return {str(p) for root in roots for p in root.rglob("*")}


def _gpu_runtime_usable() -> bool:
    """What compressor.pipeline.resolve_target asks: is one of the gpu profile's runtimes usable here?"""
    from exporters.runners import available_runners
    from profiles import load_profile

    return bool(set(load_profile("gpu").runtimes) & set(available_runners()))


_TRT = importlib.util.find_spec("tensorrt") is not None
_CUDA = torch.cuda.is_available()


def case(id_, args, what, *marks, out=True):
    """``args`` use {fx} (fixture folder) and {tmp} (the test's tmp_path); ``what`` must be in the line.

    ``out=True`` adds ``--out {tmp}/out`` (a run directory the failed run must not leave behind).
    """
    return pytest.param(args, what, out, id=id_, marks=marks)


def run_(*args):
    return [*FAST, *args]


CASES = [
    # --- model ---
    case("model-unknown-name", run_("--budget-macs", "20M", "--model", "resnet1000"), "unknown model 'resnet1000'"),
    case("model-spec-missing-module", run_("--budget-macs", "20M", "--model", "no_such_pkg_xyz.nets:build"),
         "cannot import 'no_such_pkg_xyz.nets'"),
    case("model-spec-missing-function", run_("--budget-macs", "20M", "--model", "bad_inputs_models:no_such_fn"),
         "has no callable 'no_such_fn'"),
    case("model-spec-empty-function", run_("--budget-macs", "20M", "--model", "bad_inputs_models:"),
         "is not package.module:function"),
    case("model-spec-returns-non-module", run_("--budget-macs", "20M", "--model", "bad_inputs_models:not_module"),
         "returned int, not a torch.nn.Module"),
    case("model-spec-module-fails-to-import", run_("--budget-macs", "20M", "--model", "bad_inputs_broken:build"),
         "bad_inputs_broken"),
    case("model-spec-function-needs-arguments", run_("--budget-macs", "20M", "--model", "bad_inputs_models:needs_args"),
         "needs_args"),
    case("inspect-unknown-model", ["inspect", "--model", "resnet1000"], "unknown model 'resnet1000'", out=False),
    # --- weights ---
    case("weights-other-architecture", run_("--budget-macs", "20M", "--weights", "{fx}/other_arch.pt"),
         "do not fit the model"),
    case("weights-pickled-module", run_("--budget-macs", "20M", "--weights", "{fx}/pickled_module.pt"),
         "needs code to load"),
    case("weights-random-bytes", run_("--budget-macs", "20M", "--weights", "{fx}/random_bytes.pt"), "corrupt"),
    case("weights-truncated-zip", run_("--budget-macs", "20M", "--weights", "{fx}/truncated.pt"), "corrupt"),
    case("weights-missing-file", run_("--budget-macs", "20M", "--weights", "{fx}/no_such_weights.pt"),
         "does not exist"),
    # --- budgets ---
    case("budget-bad-suffix", run_("--budget-macs", "300X"), "'300X' is not a count"),
    case("budget-negative", run_("--budget-macs", "-5M"), "'-5M' is not a count"),
    case("budget-zero", run_("--budget-macs", "0"), "must be at least 1"),
    case("budget-overflow", run_("--budget-macs", "1e400"), "is too large"),
    case("budget-params-malformed", run_("--budget-params", "2.5Q"), "'2.5Q' is not a count"),
    case("budget-missing", run_(), "no budget given"),
    case("budget-macs-unreachable", run_("--budget-macs", "1M"), "below the smallest architecture"),
    # Conflicting budgets: the two bounds can only conflict when one is below the smallest architecture
    # (the smallest architecture minimises MACs and params together). The unreachable one is named.
    case("budget-params-unreachable-macs-reachable", run_("--budget-macs", "20M", "--budget-params", "1K"),
         "budget of 1K params is below the smallest architecture"),
    case("budget-both-unreachable", run_("--budget-macs", "1K", "--budget-params", "1K"),
         "budget of 1K MACs is below the smallest architecture"),
    case("nas-budget-missing", ["nas", "-q", "--out", "{tmp}/out"], "--budget-macs", out=False),
    case("budget-percent-over-100", run_("--budget-macs", "150%"), "'150%' must be above 0% and at most 100%"),
    case("budget-fraction-without-percent", run_("--budget-params", "0.5"), "'0.5' must be at least 1"),
    # --- kept layers, distillation ---
    case("keep-matches-nothing-inspect", ["inspect", "--model", "resnet18", "--keep", "layer9.*"],
         "--keep 'layer9.*' matches no layer of resnet18", out=False),
    case("kd-lambda-above-1", run_("--budget-macs", "20M", "--kd-lambda", "1.5"), "--kd-lambda"),
    case("kd-temperature-zero", run_("--budget-macs", "20M", "--kd-temperature", "0"), "--kd-temperature"),
    # --- data ---
    case("data-missing-dir", run_("--budget-macs", "20M", "--data", "{fx}/no_such_dir"), "does not exist"),
    case("data-empty-dir", run_("--budget-macs", "20M", "--data", "{fx}/empty"), "has no class subfolders"),
    case("data-class-folders-without-images", run_("--budget-macs", "20M", "--data", "{fx}/no_images"),
         "no images found"),
    case("data-one-class", run_("--budget-macs", "20M", "--data", "{fx}/one_class"), "has a single class"),
    case("data-unreadable-png", run_("--budget-macs", "20M", "--data", "{fx}/garbage"), "broken.png cannot be read"),
    case("data-is-a-file", run_("--budget-macs", "20M", "--data", "{fx}/a_file"), "is not a folder"),
    case("num-classes-mismatch", run_("--budget-macs", "20M", "--data", "{fx}/good", "--num-classes", "5"),
         "does not match the data's 2 classes"),
    case("num-classes-one", run_("--budget-macs", "20M", "--num-classes", "1"), "--num-classes"),
    # --- input shape ---
    case("shape-two-dims", run_("--budget-macs", "20M", "--input-shape", "224x224"), "is not CxHxW"),
    case("shape-zero-side", run_("--budget-macs", "20M", "--input-shape", "3x0x224"), "is not CxHxW"),
    case("shape-one-channel-rgb-data", run_("--budget-macs", "20M", "--data", "{fx}/good", "--input-shape", "1x64x64"),
         "has 1 channels; the images have 3"),
    case("shape-too-small-inception", run_("--budget-macs", "20M", "--model", "inception_v3", "--input-shape", "3x8x8",
                                              "--train-resolution", "80"),
         "does not run on an input of shape (3, 8, 8)"),
    case("shape-wrong-for-user-model",
         run_("--budget-macs", "20M", "--model", "bad_inputs_models:fixed_size", "--input-shape", "3x32x32",
              "--train-resolution", "64"),
         "does not run on an input of shape (3, 32, 32)"),
    case("train-resolution-wrong-for-model",
         run_("--budget-macs", "20M", "--model", "bad_inputs_models:fixed_size", "--input-shape", "3x64x64"),
         "--train-resolution"),
    # --- target profile ---
    case("target-unknown-name", run_("--budget-macs", "20M", "--target", "tpu"), "unknown target 'tpu'"),
    case("profile-toml-syntax-error", run_("--budget-macs", "20M", "--target", "{fx}/syntax.toml"),
         "is not valid TOML"),
    case("profile-toml-missing-field", run_("--budget-macs", "20M", "--target", "{fx}/missing_field.toml"),
         "field 'input_shape' is missing"),
    case("profile-toml-wrong-type", run_("--budget-macs", "20M", "--target", "{fx}/wrong_type.toml"),
         "field 'batch' must be an integer"),
    case("profile-toml-missing-file", run_("--budget-macs", "20M", "--target", "{fx}/no_such_profile.toml"),
         "does not exist"),
    case("target-gpu-without-gpu", run_("--budget-latency", "4ms", "--target", "gpu"), "--target cpu",
         pytest.mark.skipif(_gpu_runtime_usable(), reason="a GPU runtime is usable here")),
    case("device-cuda-without-cuda", run_("--budget-macs", "20M", "--device", "cuda"), "CUDA is not available",
         pytest.mark.skipif(_CUDA, reason="CUDA is available here")),
    case("engine-without-tensorrt", ["engine", "{fx}/model.onnx", "--out", "{tmp}/model.engine", "-q"],
         "TensorRT is not installed", pytest.mark.skipif(_TRT, reason="TensorRT is installed here"), out=False),
    # --- output directory ---
    case("out-under-a-file", run_("--budget-macs", "20M", "--out", "{fx}/a_file/run"),
         "cannot write to output directory",
         out=False),
    case("out-is-a-file", run_("--budget-macs", "20M", "--out", "{fx}/a_file"), "exists and is not a directory",
         out=False),
    case("out-not-empty", run_("--budget-macs", "20M", "--out", "{fx}/nonempty"), "is not empty", out=False),
    case("out-nested-parents-left-behind",
         run_("--budget-macs", "20M", "--model", "resnet1000", "--out", "{tmp}/new/deeper/run"), "unknown model",
         out=False),
    # --- bench, options ---
    case("bench-missing-file", ["bench", "{fx}/no_such_model.onnx", "--target", "cpu"], "does not exist", out=False),
    case("bench-unknown-extension", ["bench", "{fx}/model.txt", "--target", "cpu"], "cannot bench model.txt",
         out=False),
    case("option-without-equals", run_("--budget-macs", "20M", "--option", "tau_max"), "is not KEY=VALUE"),
    case("option-unknown-key", run_("--budget-macs", "20M", "--method", "uniform", "--option", "tau_mx=10",
                                    "--latency-runs", "2"), "tau_mx"),
]


def _check_one_error_line(exit_code: int, stdout: str, stderr: str, what: str) -> None:
    assert "Traceback" not in stdout + stderr, stderr
    assert exit_code == 2, f"exit code {exit_code}\nstdout: {stdout}\nstderr: {stderr}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert what in lines[0], f"{what!r} not in {lines[0]!r}"
    assert not stdout.strip(), f"nothing on stdout expected, got {stdout!r}"


def _format(args, fx: Path, tmp: Path) -> list[str]:
    return [a.format(fx=fx, tmp=tmp) for a in args]


@pytest.mark.parametrize("args, what, out", CASES)
def test_bad_input_is_one_error_line(args, what, out, fx, tmp_path):
    argv = _format(args, fx, tmp_path) + (["--out", str(tmp_path / "out")] if out else [])
    before = _tree(fx, tmp_path)
    result = CliRunner().invoke(main, argv)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    _check_one_error_line(result.exit_code, result.stdout, result.stderr, what)
    assert not (tmp_path / "out").exists()
    assert _tree(fx, tmp_path) == before  # no run directory, parent folder or temporary file left behind


def test_default_out_leaves_nothing_in_cwd(fx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, run_("--budget-macs", "20M", "--model", "resnet1000"))
    _check_one_error_line(result.exit_code, result.stdout, result.stderr, "unknown model")
    assert list(tmp_path.iterdir()) == []


SLOW = pytest.mark.slow  # a fresh `python -m compressor` imports torch: seconds per case
SUBPROCESS_CASES = [
    case("model-unknown-name", run_("--budget-macs", "20M", "--model", "resnet1000"), "unknown model", SLOW),
    case("profile-toml-syntax-error", run_("--budget-macs", "20M", "--target", "{fx}/syntax.toml"),
         "is not valid TOML", SLOW),
    case("out-under-a-file", run_("--budget-macs", "20M", "--out", "{fx}/a_file/run"), "cannot write", SLOW, out=False),
    case("bench-unknown-extension", ["bench", "{fx}/model.txt", "--target", "cpu"], "cannot bench", out=False),
    case("model-spec-module-fails-to-import", run_("--budget-macs", "20M", "--model", "bad_inputs_broken:build"),
         "bad_inputs_broken", SLOW),
]


@pytest.mark.parametrize("args, what, out", SUBPROCESS_CASES)
def test_bad_input_in_a_real_process_has_no_traceback(args, what, out, fx, tmp_path):
    """What a terminal sees: stderr of `python -m compressor`, not click's test runner's capture."""
    argv = _format(args, fx, tmp_path) + (["--out", str(tmp_path / "out")] if out else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(fx), os.environ.get("PYTHONPATH", "")])}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = _tree(fx, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "compressor", *argv], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)
    _check_one_error_line(proc.returncode, proc.stdout, proc.stderr, what)
    assert _tree(fx, tmp_path) == before

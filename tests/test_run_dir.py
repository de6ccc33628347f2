"""The run directory is the user's: a run only removes what it created, keeps what --resume needs
when interrupted, takes a lock, and reads its settings back as untrusted data.

Issue 9, items 2, 3, 6-8, 12, 13, 15-17, 20-23, 25. Runs are kept cheap: the digits at a 16-pixel
proxy, a 3x32x32 deployment shape, no fine-tuning.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper, shape_inference

from compress_base.fileio import write_json
from compressor import target
from compressor.budget import Budget
from compressor.cli import main
from compressor.pipeline import resume_config
from compressor.rundir import RunDir
from compressor.settings import RunConfig

from conftest import run_python, subprocess_env

FAST = ["--teacher-epochs", "0", "--epochs", "0", "-q", "--input-shape", "3x32x32", "--train-resolution", "16",
        "--latency-runs", "2", "--budget-macs", "15M", "--option", "images=32", "--option", "step=0.2"]
TEACH = [a if a != "0" or i != 1 else "1" for i, a in enumerate(FAST)]  # one teacher epoch: a stage saves state


def _cli(*args):
    return CliRunner().invoke(main, list(args))


def _one_error(result, what: str) -> None:
    """Exit code 2 and one `error:` line containing ``what``, no traceback."""
    out = result.stderr
    code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert "Traceback" not in out and code == 2, f"exit code {code}: {out}"
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and what in errors[0], out


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*")) if not p.is_symlink()}


def _unfinished(root: Path, **settings) -> Path:
    """A run directory as a killed run leaves it: its settings saved, nothing else yet."""
    config = RunConfig(budget=Budget(macs=15_000_000), teacher_epochs=0, epochs=0, input_shape="3x32x32",
                       train_resolution=16, latency_runs=2, quiet=True, out=str(root))
    saved = {**config.settings(), "budget": config.budget.to_dict(), **settings}
    (root / ".compress").mkdir(parents=True)
    (root / ".compress" / "run.json").write_text(json.dumps(saved))  # as a forger would: Infinity and all
    return root


# --- item 2: --resume never imports the user code run.json names, unless --trust-code ----------------------

EVIL = "from pathlib import Path\nPath('PWNED').write_text('x')\n\ndef build(num_classes=10):\n    return None\n"


@pytest.mark.slow
def test_resume_does_not_import_the_model_module_shipped_in_the_run_dir(tmp_path):
    run = _unfinished(tmp_path / "run", model="evil_mod:build")
    (run / "evil_mod.py").write_text(EVIL)
    refused = run_python("-m", "compressor", "--resume", ".", cwd=run)
    _one_error(refused, "--trust-code")
    assert "'evil_mod:build'" in refused.stderr
    assert not (run / "PWNED").exists()
    # the opt-in imports it: the user said they trust this run directory
    trusted = run_python("-m", "compressor", "--resume", ".", "--trust-code", cwd=run)
    assert (run / "PWNED").exists()
    _one_error(trusted, "returned NoneType")


# --- item 3: paths in run.json are trusted only inside the run directory or when given again ----------------

def test_paths_outside_the_run_dir_must_be_given_again(tmp_path):
    elsewhere = tmp_path / "any" / "new" / "dir" / "x.json"
    run = _unfinished(tmp_path / "run", latency_table=str(elsewhere))
    result = _cli("--resume", str(run))
    _one_error(result, "outside the run directory")
    assert "--latency-table" in result.stderr
    assert not (tmp_path / "any").exists()
    # given again on the command line, it is the user's choice
    config = resume_config(str(run), given={"latency_table": str(elsewhere)})
    assert config.latency_table == str(elsewhere)
    inside = _unfinished(tmp_path / "run2", latency_table=str(tmp_path / "run2" / "lut.json"))
    assert resume_config(str(inside)).latency_table == str(tmp_path / "run2" / "lut.json")


def test_other_options_beside_resume_are_refused(tmp_path):
    run = _unfinished(tmp_path / "run")
    _one_error(_cli("--resume", str(run), "--epochs", "3"), "--epochs cannot change the settings of a resumed run")


# --- item 21: run.json of the wrong types, bad UTF-8; damaged state files ------------------------------------

@pytest.mark.parametrize("field,value,what", [
    ("epochs", "x", "setting 'epochs' must be an integer"),
    ("model", 5, "setting 'model' must be a string"),
    ("seed", "abc", "setting 'seed' must be an integer"),
    ("seed", -1, "setting 'seed' is -1"),
    ("lr", None, "setting 'lr' must be a finite number"),
    ("budget", {"macs": "15M"}, "budget macs must be a whole number"),
    ("budget", {"latency_ms": 1e400}, "budget latency_ms must be a positive, finite number"),
    ("evil", 1, "unknown setting 'evil'"),
])
def test_damaged_settings_are_one_line_and_write_nothing(tmp_path, field, value, what):
    run = _unfinished(tmp_path / "run", **{field: value})
    before = _tree(run)
    result = _cli("--resume", str(run))
    _one_error(result, what)
    assert "run.json is damaged" in result.stderr
    assert _tree(run) == before


def test_settings_in_bad_utf8(tmp_path):
    run = _unfinished(tmp_path / "run")
    (run / ".compress" / "run.json").write_bytes(b'{"model": "\xff\xfe"}')
    _one_error(_cli("--resume", str(run)), "run.json is damaged (UnicodeDecodeError)")


@pytest.mark.parametrize("content", [b"random bytes, not a zip", "another model"])
def test_damaged_teacher_state(tmp_path, content):
    run = _unfinished(tmp_path / "run", teacher_epochs=1)
    teacher = run / ".compress" / "teacher.pt"
    if isinstance(content, bytes):
        teacher.write_bytes(content)
    else:
        torch.save(torch.nn.Linear(3, 2).state_dict(), teacher)
    result = _cli("--resume", str(run))
    _one_error(result, "cannot resume the teacher training")
    assert "delete it" in result.stderr and teacher.exists()


@pytest.mark.parametrize("content", ["{not json", '{"history": []}', '{"architecture": [1, 2], "history": []}'])
def test_damaged_search_state(tmp_path, content):
    run = _unfinished(tmp_path / "run")
    (run / ".compress" / "search.json").write_text(content)
    _one_error(_cli("--resume", str(run)), "cannot resume the search")


# --- items 22, 23: numbers refused before they are used ---------------------------------------------------

@pytest.mark.parametrize("args,what", [
    (["--budget-latency", "9" * 400], "is too large"),
    (["--budget-macs", "15M", "--seed", "-1"], "--seed"),
    (["--budget-macs", "15M", "--seed", str(2**32)], "--seed"),
])
def test_numbers_out_of_range(tmp_path, args, what):
    result = _cli(*args, "--out", str(tmp_path / "r"))
    _one_error(result, what)
    assert not (tmp_path / "r").exists()


def test_json_files_never_hold_nan_or_infinity(tmp_path):
    write_json(tmp_path / "x.json", {"loss": float("nan"), "deep": [float("inf"), 1.5]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"loss": None, "deep": [None, 1.5]}


# --- item 25: the resuming invocation's -q decides logs and bars alike -------------------------------------

def test_resume_takes_quiet_from_the_command_line(tmp_path):
    run = _unfinished(tmp_path / "run")  # saved with quiet=True
    assert resume_config(str(run), quiet=False).quiet is False
    assert resume_config(str(run), quiet=True).quiet is True


# --- items 7, 12, 13: --overwrite removes only what runs made ----------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished run (its files' bytes), to copy."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = run_python("-m", "compressor", *FAST, "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.mark.slow
def test_overwrite_leaves_the_users_files(tmp_path):
    out = tmp_path / "u"
    (out / "state").mkdir(parents=True)
    (out / "state" / "p.txt").write_text("x")
    (out / "run.json").write_text("mine")
    (out / "notes.txt").write_text("mine too")
    failed = _cli(*FAST, "--model", "resnet1000", "--out", str(out), "--overwrite")
    _one_error(failed, "unknown model")
    ok = _cli(*FAST, "--out", str(out), "--overwrite")
    assert ok.exit_code == 0, ok.output
    assert (out / "state" / "p.txt").read_text() == "x"
    assert (out / "run.json").read_text() == "mine" and (out / "notes.txt").read_text() == "mine too"
    assert not (out / ".compress").exists()
    listed = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert "notes.txt" not in listed and "run.json" not in listed


@pytest.mark.slow
def test_overwrite_into_an_old_run_drops_its_stale_artifacts(tmp_path, finished):
    import shutil

    out = tmp_path / "old"
    shutil.copytree(finished, out)
    # the old run was a latency run: its manifest lists latency_model.json
    (out / "latency_model.json").write_text('{"old": true}\n')
    manifest = json.loads((out / "manifest.json").read_text())
    from compressor.manifest import sha256

    manifest["artifacts"]["latency_model.json"] = {"sha256": sha256(out / "latency_model.json"), "bytes": 14}
    manifest["artifacts"]["search.json"]["sha256"] = "0" * 64  # the user edited it: not the old run's any more
    write_json(out / "manifest.json", manifest)
    result = _cli(*FAST, "--out", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (out / "latency_model.json").exists()
    listed = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert "latency_model.json" not in listed
    assert set(listed) | {"manifest.json"} == {p.name for p in out.iterdir() if p.is_file()}


@pytest.mark.slow
def test_a_state_link_is_refused_and_nothing_lands_outside(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    out = tmp_path / "u"
    out.mkdir()
    (out / ".compress").symlink_to(target)
    (out / "state").symlink_to(target)  # the old state folder's name: now just a user file
    result = _cli(*TEACH, "--out", str(out), "--overwrite")
    _one_error(result, "is not a folder this tool made")
    assert list(target.iterdir()) == []
    (out / ".compress").unlink()
    result = _cli(*TEACH, "--out", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert list(target.iterdir()) == []


# --- items 8, 15, 16: interrupted runs keep their state; resume cleans up and finishes ----------------------

@pytest.mark.slow
def test_interrupted_run_keeps_its_state_and_resumes(tmp_path, monkeypatch):
    from compressor import artifact

    out = tmp_path / "r"
    real = artifact.save

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifact, "save", interrupted)  # Ctrl-C as the export begins
    result = _cli(*TEACH, "--out", str(out))
    assert result.exit_code == 130
    assert f"interrupted: continue with `compress --resume {out}`" in result.output
    assert (out / ".compress" / "run.json").is_file() and (out / ".compress" / "teacher.pt").is_file()
    stale = out / ".baseline.onnx.ab12cd_x.tmp"  # what a process killed mid-write leaves
    stale.write_bytes(b"half")
    mine = out / ".mine.tmp"  # not of write_atomic's pattern: the user's
    mine.write_text("x")
    monkeypatch.setattr(artifact, "save", real)
    resumed = _cli("--resume", str(out))
    assert resumed.exit_code == 0, resumed.output
    assert not stale.exists() and mine.exists() and not (out / ".compress").exists()


@pytest.mark.slow
def test_a_kill_after_the_manifest_leaves_a_finished_run(tmp_path, monkeypatch):
    out = tmp_path / "r"

    def killed(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "finish", killed)
    assert _cli(*FAST, "--out", str(out)).exit_code == 130
    assert (out / "manifest.json").is_file() and (out / ".compress").is_dir()
    _one_error(_cli("--resume", str(out)), "has finished already")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_keeps_what_resume_needs(tmp_path, sig):
    out = tmp_path / "r"
    args = [*TEACH, "--teacher-epochs", "2"]
    args.remove("-q")
    proc = subprocess.Popen([sys.executable, "-m", "compressor", *args, "--out", str(out)], text=True,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=subprocess_env())
    for line in proc.stderr:
        if "teacher epoch 1/2" in line:  # a checkpoint is on disk
            proc.send_signal(sig)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    assert f"interrupted: continue with `compress --resume {out}`" in rest and "Traceback" not in rest
    assert (out / ".compress" / "run.json").is_file()
    assert not [p for p in out.rglob("*.tmp")]


# --- item 17: one process per run directory ---------------------------------------------------------------

def test_a_second_process_on_the_run_dir_is_refused(tmp_path):
    run = _unfinished(tmp_path / "run")
    fd = os.open(run, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _one_error(_cli("--resume", str(run)), "is in use by another compress process")
        _one_error(_cli(*FAST, "--out", str(run), "--overwrite"), "is in use by another compress process")
        assert (run / ".compress" / "run.json").is_file()
    finally:
        os.close(fd)


# --- item 20: a full disk is one line, and the run can continue ----------------------------------------------

def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))  # files stop growing at 4 MiB: EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@pytest.mark.slow
def test_full_disk_is_one_line_and_resumable(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.run([sys.executable, "-m", "compressor", *FAST, "--out", str(out)], capture_output=True,
                          text=True, env=subprocess_env(), preexec_fn=_limit_file_size, timeout=600)
    _one_error(proc, "cannot write to the run directory")
    assert f"continue with `compress --resume {out}`" in proc.stderr
    assert not [p for p in out.rglob("*.tmp")]
    resumed = run_python("-m", "compressor", "--resume", str(out), "-q")
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_read_only_folder_mid_run(tmp_path, monkeypatch):
    import errno

    from compressor import artifact

    def read_only(model, arch, spec, out):
        raise OSError(errno.EROFS, "Read-only file system", str(Path(out) / "model.pt"))

    monkeypatch.setattr(artifact, "save", read_only)
    out = tmp_path / "r"
    result = _cli(*FAST, "--out", str(out))
    _one_error(result, "(Read-only file system): free space or make it writable")
    assert (out / ".compress" / "run.json").is_file()  # the searched run is kept for --resume


# --- item 6: every figure of the report describes the delivered artifact ------------------------------------

def _onnx_macs(path: Path) -> int:
    """MACs of Conv and Gemm nodes of an ONNX file at batch 1, from its inferred shapes."""
    model = shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    weights = {t.name: numpy_helper.to_array(t).shape for t in model.graph.initializer}
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = weights[node.input[1]]  # (cout, cin/groups, kh, kw)
            macs += int(np.prod(shapes[node.output[0]])) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            w = weights[node.input[1]]
            macs += int(np.prod(w))
    return macs


@pytest.mark.slow
def test_report_after_a_latency_repair_describes_the_delivered_model(tmp_path, monkeypatch):
    """The first measurement of the searched model is made to read 1.5x the budget, so the run
    repairs the architecture; the report must give the repaired model's figures."""
    real, seen = target.measure_onnx, []

    def measure(path, profile, shape, runs, slowest=0):
        stats = real(path, profile, shape, runs, slowest)
        if Path(path).name == "latency-check.onnx" and not seen:
            seen.append(stats.p50)
            stats = dataclasses.replace(stats, p50=75.0)  # 1.5x the 50 ms budget: the repair must cut a third
        return stats

    monkeypatch.setattr(target, "measure_onnx", measure)
    out = tmp_path / "r"
    args = [a for a in FAST if a not in ("--budget-macs", "15M")]
    result = _cli(*args, "--budget-latency", "50ms", "--budget-macs", "30M",
                  "--latency-table", str(tmp_path / "lut.json"), "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    checks = report["latency_check"]
    assert len(checks) >= 2 and checks[-1]["macs"] < checks[0]["macs"]  # it was repaired
    assert report["compressed"]["macs"] == _onnx_macs(out / "model.onnx") == checks[-1]["macs"]
    params = sum(t.numel() for k, t in torch.load(out / "model.pt", weights_only=True).items()
                 if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert report["compressed"]["params"] == params
    arch = json.loads((out / "arch.json").read_text())
    assert arch["widths"] == report["architecture"]["widths"]
    assert re.search(rf"MACs +\S+ +{re.escape(_fmt(report['compressed']['macs']))} ", result.output)


def _fmt(n):
    from compressor.units import format_count

    return format_count(n)


# --- item 11: a validation set that lacks a class is said so in the report ----------------------------------

def test_data_warnings_reach_the_report(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes in (("train", "abc"), ("val", "ab")):
        for c in classes:
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / c / f"{i}.png")
    out = tmp_path / "r"
    result = _cli(*FAST, "--data", str(tmp_path / "data"), "--out", str(out))
    assert result.exit_code == 0, result.output
    notes = json.loads((out / "report.json").read_text())["notes"]
    assert any("validation has no image of class 'c'" in n for n in notes)
    assert "validation has no image of class" in (out / "report.md").read_text()

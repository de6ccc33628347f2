"""A run killed mid-search (SIGKILL) and continued with --resume ends with the same artifacts:
the tas and asng searches continue from their last epoch (weights, architecture parameters or θ,
optimisers, random state), not from scratch."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

COMMON = ["--budget-macs", "20M", "--train-resolution", "16", "--input-shape", "3x64x64", "--teacher-epochs", "1",
          "--epochs", "2", "--latency-runs", "3", "--search-epochs", "3", "--option", "steps_per_epoch=20"]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1")


def _compress(*args, **kw):
    return subprocess.run([sys.executable, "-m", "compressor", *args], capture_output=True, text=True,
                          env=_env(), timeout=600, **kw)


@pytest.fixture(scope="module", params=["asng", "tas"])
def dirs(request, tmp_path_factory):
    method = request.param
    root = tmp_path_factory.mktemp(f"resume-{method}")
    args = ["--method", method, *COMMON]
    straight = _compress(*args, "-q", "--out", str(root / "straight"))
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = root / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "compressor", *args, "--out", str(killed)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=_env())
    for line in proc.stderr:
        if f"{method} epoch 1/3" in line:  # mid-search: one of three epochs done and checkpointed
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return root, method


def test_killed_run_left_state_and_no_report(dirs):
    root, method = dirs
    killed = root / "killed"
    assert (killed / "run.json").is_file() and (killed / "state" / "teacher.pt").is_file()
    state = torch.load(killed / "state" / f"search-{method}.pt", weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1  # the search state after its first epoch
    assert not (killed / "report.json").exists()
    assert not [p for p in killed.rglob("*.tmp")]


def test_resume_ends_with_the_same_artifacts(dirs):
    root, method = dirs
    killed, straight = root / "killed", root / "straight"
    resumed = _compress("--resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{method}: resuming after epoch 1" in resumed.stderr
    assert (killed / "arch.json").read_text() == (straight / "arch.json").read_text()
    a = torch.load(straight / "model.pt", weights_only=True)
    b = torch.load(killed / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    r1, r2 = (json.loads((d / "report.json").read_text()) for d in (straight, killed))
    assert r1["compressed"]["accuracy"] == r2["compressed"]["accuracy"]
    assert not (killed / "state").exists()  # a finished run keeps only its artifacts


def test_resume_of_a_finished_run_is_refused(dirs):
    root, _ = dirs
    again = _compress("--resume", str(root / "straight"))
    assert again.returncode == 2 and "has finished already" in again.stderr

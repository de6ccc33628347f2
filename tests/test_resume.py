"""A run killed mid-search (SIGKILL) and continued with --resume ends with the same artifacts:
the tas and asng searches continue from their last epoch (weights, architecture parameters or θ,
optimisers, random state), autoshrink from its last step (architecture, snapshots, shared weights,
data position, random state), and compress nas's cell search from its last step."""
import json
import signal
import subprocess
import sys

import pytest
import torch

from conftest import run_python, subprocess_env

pytestmark = pytest.mark.slow  # every test kills and resumes whole runs (minutes in all)

COMMON = ["--train-resolution", "16", "--input-shape", "3x64x64", "--teacher-epochs", "1", "--epochs", "2",
          "--latency-runs", "3"]
EPOCHS = ["--budget-macs", "20M", "--search-epochs", "3", "--option", "steps_per_epoch=20", "--option",
          "refine_images=32"]
# method: (arguments, the log line after which the state of one epoch or step is on disk, its unit)
METHODS = {
    "asng": (EPOCHS, "asng epoch 1/3", "epoch"),
    "tas": (EPOCHS, "tas epoch 1/3", "epoch"),
    "autoshrink": (["--budget-macs", "90M", "--option", "k=3", "--option", "finetune_steps=2", "--option",
                    "commit_steps=2", "--option", "eval_batches=2"], "autoshrink step 2:", "step"),
}


def _compress(*args, **kw):
    return run_python("-m", "compressor", *args, **kw)


def _kill_after(marker: str, *args) -> int:
    """Start ``compress ARGS``, SIGKILL it as soon as its log shows ``marker``; its exit code."""
    proc = subprocess.Popen([sys.executable, "-m", "compressor", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=subprocess_env())
    for line in proc.stderr:
        if marker in line:
            proc.send_signal(signal.SIGKILL)
            break
    return proc.wait(timeout=60)


@pytest.fixture(scope="module", params=sorted(METHODS))
def dirs(request, tmp_path_factory):
    method = request.param
    extra, marker, _ = METHODS[method]
    root = tmp_path_factory.mktemp(f"resume-{method}")
    args = ["--method", method, *COMMON, *extra]
    straight = _compress(*args, "-q", "--out", str(root / "straight"))
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = root / "killed"
    # mid-search: an epoch or a step done and checkpointed
    assert _kill_after(marker, *args, "--out", str(killed)) == -signal.SIGKILL
    return root, method


def test_killed_run_left_state_and_no_report(dirs):
    root, method = dirs
    killed = root / "killed"
    assert (killed / ".compress" / "run.json").is_file() and (killed / ".compress" / "teacher.pt").is_file()
    state = torch.load(killed / ".compress" / f"search-{method}.pt", weights_only=True)
    unit = METHODS[method][2]
    if unit == "epoch":
        assert state["epoch"] == 1 and len(state["history"]) == 1  # the search state after its first epoch
    else:  # steps are short: the kill may land after a later step
        assert state["step"] >= 2 and len(state["history"]) == state["step"]
        straight = json.loads((root / "straight" / "search.json").read_text())["history"]
        assert state["step"] < len(straight)  # killed before the search ended
    assert not (killed / "report.json").exists()
    assert not [p for p in killed.rglob("*.tmp")]


def test_resume_ends_with_the_same_artifacts(dirs):
    root, method = dirs
    killed, straight = root / "killed", root / "straight"
    resumed = _compress("--resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{method}: resuming after {METHODS[method][2]} " in resumed.stderr
    assert (killed / "arch.json").read_text() == (straight / "arch.json").read_text()
    a = torch.load(straight / "model.pt", weights_only=True)
    b = torch.load(killed / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    r1, r2 = (json.loads((d / "report.json").read_text()) for d in (straight, killed))
    assert r1["compressed"]["accuracy"] == r2["compressed"]["accuracy"]
    assert not (killed / ".compress").exists()  # a finished run keeps only its artifacts


def test_resume_of_a_finished_run_is_refused(dirs):
    root, _ = dirs
    again = _compress("--resume", str(root / "straight"))
    assert again.returncode == 2 and "has finished already" in again.stderr


def test_killed_cell_search_resumes_to_the_same_result(tmp_path):
    nas = ["nas", "--budget-macs", "12M", "--train-resolution", "16", "--input-shape", "3x32x32", "--epochs", "2",
           "--latency-runs", "3", "--option", "k=2", "--option", "epochs=1", "--option", "max_steps=4",
           "--option", "train_images=128", "--option", "val_images=64", "--option", "width=4", "--option", "stem=8"]
    straight = _compress(*nas, "-q", "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = tmp_path / "killed"
    # step 1 of 4 done and checkpointed
    assert _kill_after("shrinkcnn step 1:", *nas, "--out", str(killed)) == -signal.SIGKILL
    state = torch.load(killed / ".compress" / "search-shrinkcnn.pt", weights_only=True)
    assert 1 <= state["step"] < 4 and not (killed / "report.json").exists()
    resumed = _compress("--resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "shrinkcnn: resuming after step" in resumed.stderr
    assert "shrinkcnn (autoshrink-cell):" in resumed.stdout  # compress nas's summary, not compress run's
    s1, s2 = (json.loads((d / "search.json").read_text())["snapshots"] for d in (tmp_path / "straight", killed))
    assert s1 == s2 and len(s1) == 5
    assert (killed / "arch.json").read_text() == (tmp_path / "straight" / "arch.json").read_text()
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    b = torch.load(killed / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (killed / ".compress").exists()

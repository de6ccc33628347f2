"""`compress` under torchrun: two gloo processes on this CPU machine."""
import json

import pytest

from conftest import run_python, torchrun

pytestmark = pytest.mark.slow  # torchrun: whole runs in two processes

ARGS = ["--budget-macs", "20M", "--train-resolution", "16", "--input-shape", "3x64x64", "--teacher-epochs", "0",
        "--epochs", "1", "--latency-runs", "3", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    greedy = [*ARGS, "--option", "images=32", "--option", "step=0.2"]  # the plumbing, not greedy's choices
    two = torchrun("-m", "compressor", *greedy, "--out", str(root / "two"), port=29517, cwd=root)
    assert two.returncode == 0, two.stderr[-2000:]
    one = run_python("-m", "compressor", *greedy, "--out", str(root / "one"), cwd=root)
    assert one.returncode == 0, one.stderr[-2000:]
    return root, two


def test_two_processes_write_one_set_of_artifacts(runs):
    root, two = runs
    assert sorted(p.name for p in root.iterdir()) == ["one", "two"]  # no stray run directories
    names = sorted(p.name for p in (root / "two").iterdir())
    assert names.count("report.json") == 1 and "model.onnx" in names
    assert not [n for n in names if n.endswith(".tmp")]
    assert two.stdout.count("resnet18 (greedy):") == 1  # rank 0 alone reports


def test_distributed_result_matches_one_process(runs):
    root, _ = runs
    r1 = json.loads((root / "one" / "report.json").read_text())
    r2 = json.loads((root / "two" / "report.json").read_text())
    # Same seed, same untrained model: the search sees the same weights on every rank, so the
    # architecture is exactly the one process's; the baseline is evaluated on all the data.
    assert (root / "one" / "arch.json").read_text() == (root / "two" / "arch.json").read_text()
    assert r1["baseline"]["accuracy"] == r2["baseline"]["accuracy"]
    # Fine-tuning differs by design: each rank distils on half the data per step and DDP averages
    # the gradients (an effective batch twice as large); after one epoch the accuracies stay close.
    assert abs(r1["compressed"]["accuracy"] - r2["compressed"]["accuracy"]) < 0.25


def test_data_parallel_search_inside_a_run(tmp_path):
    # asng trains its supernet with DDP over shards (a dropped block's weights take no part in some
    # passes); the run completes, every rank ends with rank 0's architecture, one set of artifacts
    run = torchrun("-m", "compressor", *ARGS, "--method", "asng", "--search-epochs", "1", "--option",
                   "steps_per_epoch=4", "--option", "refine_images=32", "--out", str(tmp_path / "asng"), port=29519,
                   cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "different architectures" not in run.stderr
    history = json.loads((tmp_path / "asng" / "search.json").read_text())["history"]
    assert history[0]["steps"] == 4 and history[0]["weight_loss"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asng"]
    assert run.stdout.count("resnet18 (") == 1


def test_cell_search_split_over_ranks_finds_what_one_process_finds(tmp_path):
    # compress nas: every step's candidates are trained by different ranks with the seeds one
    # process uses, so the snapshots (accuracies, scores, the chosen edges) are exactly one process's
    nas = ["nas", "--budget-macs", "12M", "--train-resolution", "16", "--input-shape", "3x32x32", "--epochs", "1",
           "--latency-runs", "3", "-q", "--option", "k=3", "--option", "epochs=1", "--option", "max_steps=2",
           "--option", "train_images=128", "--option", "val_images=64", "--option", "width=4", "--option", "stem=8"]
    two = torchrun("-m", "compressor", *nas, "--out", str(tmp_path / "two"), port=29521, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    one = run_python("-m", "compressor", *nas, "--out", str(tmp_path / "one"), cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    s1, s2 = (json.loads((tmp_path / d / "search.json").read_text())["snapshots"] for d in ("one", "two"))
    assert len(s1) == 3 and s1 == s2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert two.stdout.count("shrinkcnn (") == 1

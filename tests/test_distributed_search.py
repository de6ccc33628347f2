"""The searches under torchrun (two gloo processes) against one process (tests/_ddp_search.py).

tas and asng split the data: two ranks at batch 16 take exactly the steps one process takes at
batch 32 on a network without batch norm (same images per step, gradients and losses averaged),
up to float rounding. autoshrink splits the candidates: two ranks give exactly one process's
search at the same batch size.

Also: a torchvision download runs on each machine's first process before the others.
"""
import json
import math
from pathlib import Path

import pytest

from conftest import run_python, torchrun

SCRIPT = Path(__file__).with_name("_ddp_search.py")

pytestmark = pytest.mark.slow  # torchrun: two processes, 15-25 s each


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp-search")
    one = run_python(str(SCRIPT), str(out), "32")
    assert one.returncode == 0, one.stderr[-2000:]
    two = torchrun(str(SCRIPT), str(out), "16", port=29523)
    assert two.returncode == 0, two.stderr[-2000:]
    return {name: json.loads((out / f"{name}.json").read_text()) for name in ("world1-rank0", "world2-rank0",
                                                                                "world2-rank1")}


def _without_seconds(value):
    if isinstance(value, dict):
        return {k: _without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_seconds(v) for v in value]
    return value


def _close(a, b, rel=1e-5):
    """Equal structure, equal strings and flags, numbers equal to ``rel``."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-7)
    return a == b


def test_every_rank_takes_the_same_decisions(results):
    assert _without_seconds(results["world2-rank0"]) == _without_seconds(results["world2-rank1"])


@pytest.mark.parametrize("method", ["tas", "asng"])
def test_data_parallel_search_equals_one_process_at_the_total_batch(results, method):
    one, two = results["world1-rank0"][method], results["world2-rank0"][method]
    assert one["architecture"] == two["architecture"]
    assert _close(_without_seconds(one["history"]), _without_seconds(two["history"]))
    # the per-epoch losses are those of the whole batch, not of one rank's half
    first = one["history"][0]
    assert first["weight_ce" if method == "tas" else "weight_loss"] > 0


def test_autoshrink_split_over_candidates_equals_one_process_exactly(results):
    one, two = results["world1-rank0"]["autoshrink"], results["world2-rank0"]["autoshrink"]
    assert len(one["history"]) >= 3  # several committed steps, each scoring 4 candidates over 2 ranks
    assert _without_seconds(one) == _without_seconds(two)


def test_local_rank_zero_goes_first(tmp_path):
    # a torchvision download under torchrun: the first process of the machine fetches, the others wait
    log = tmp_path / "order.log"
    done = torchrun(str(SCRIPT.with_name("_ddp_order.py")), str(log), port=29525, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert log.read_text().split("\n")[:4] == ["start 0", "end 0", "start 1", "end 1"]

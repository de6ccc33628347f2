"""benchmarks/gpu_check.py --smoke runs on this CPU and prints a line for every figure (the CUDA
ones as skipped), and gpu_check.sh calls it under a time limit."""
from __future__ import annotations

import re
from pathlib import Path

from conftest import run_python

REPO = Path(__file__).resolve().parents[1]
NUMBER = r"[0-9.]+"


def test_smoke_prints_every_figure():
    result = run_python(str(REPO / "benchmarks" / "gpu_check.py"), "--smoke", "--device", "cpu", cwd=REPO,
                        timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for model in ("resnet56 3x32x32", "resnet18 3x64x64"):
        assert re.search(rf"^train {model} batch \d+ fp32: {NUMBER} images/s$", out, re.M), out
        assert re.search(rf"^train {model} batch \d+ amp-bf16: {NUMBER} images/s \({NUMBER}x fp32\)$", out, re.M), out
    assert re.search(rf"^tas epoch resnet56 .*epoch 1: {NUMBER} s, epoch 2: {NUMBER} s .*MACs$", out, re.M), out
    for runtime in ("torch-cuda", "torch-cuda-graph"):
        assert f"latency {runtime}: skipped: no CUDA" in out.splitlines()
    for kind in ("baseline", "compressed"):
        assert re.search(rf"^latency torch-cpu resnet56 {kind} 3x32x32 batch 1: p50 {NUMBER} ms", out, re.M), out
    assert out.splitlines()[-1].startswith("gpu_check: done in")
    assert out.startswith("gpu_check: cpu (CPU, ")


def test_shell_script_runs_the_python_part_under_a_limit():
    script = (REPO / "benchmarks" / "gpu_check.sh").read_text()
    assert "timeout 470" in script and "benchmarks/gpu_check.py" in script
    assert (REPO / "benchmarks" / "gpu_check.sh").stat().st_mode & 0o111

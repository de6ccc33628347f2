"""The README's Python API example runs as written, so it cannot drift from ``compressor.compress``."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from compressor.counting import count_macs

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The first Python block of the README's "Python API" section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## Python API\n"):]
    section = section[:section.index("\n## ", 1)]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # it writes runs/tiny
    scope = {"__name__": "__main__"}
    exec(compile(readme_example(), str(README), "exec"), scope)
    result, small = scope["result"], scope["small"]
    report = result.report
    assert report.compressed.macs <= 2_500_000 < report.baseline.macs == count_macs(scope["TinyNet"](), (3, 16, 16))
    assert count_macs(result.model, (3, 16, 16)) == report.compressed.macs
    assert result.paths["model.onnx"] == tmp_path / "runs" / "tiny" / "model.onnx"
    assert report.settings["in_memory"] == ["model", "data"] and report.model == "__main__:TinyNet"
    assert report.reproduce.command.startswith("compressor.compress(model, train_loader=train_loader, ")
    assert "trained=False" in report.reproduce.command
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(small(x), result.model(x), atol=1e-5)  # load() rebuilds what compress() returned
    printed = capsys.readouterr().out
    assert f"{report.baseline.macs} -> {report.compressed.macs} MACs; accuracy " in printed

"""Budgets as counts or fractions of the original, --keep, the distillation knobs, `compress inspect`'s
group list, and a model module typed on the command line found in the current directory (and only
there: a spec read from a file never imports from it)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import compressor
from compress_base.errors import CompressError
from compressor.budget import Budget
from compressor.cli import main
from compressor.models import resolve_model
from compressor.settings import RunConfig, config_from_settings
from compressor.space import SearchSpace

TINYNET = '''
from torch import nn


def build(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )
'''
CHEAP = ["--teacher-epochs", "0", "--epochs", "0", "--input-shape", "3x32x32", "--train-resolution", "16", "-q"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_error(result, says: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if " WARNING " not in line]  # logs of a run
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.output
    return lines[0]


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """A fresh current directory holding ``tinynet.py``; the module is forgotten before and after."""
    (tmp_path / "tinynet.py").write_text(TINYNET)
    monkeypatch.chdir(tmp_path)
    path = list(sys.path)
    sys.modules.pop("tinynet", None)
    yield tmp_path
    sys.modules.pop("tinynet", None)
    assert sys.path == path  # the current directory was on it only while importing and building


# --------------------------------------------------------------------------- Budget
@pytest.mark.parametrize("kwargs, expected", [
    ({"macs": "300M"}, Budget(macs=300_000_000)),
    ({"macs": 3e8}, Budget(macs=300_000_000)),
    ({"macs": "50%"}, Budget(macs_fraction=0.5)),
    ({"macs": 0.5}, Budget(macs_fraction=0.5)),
    ({"macs": 1.0}, Budget(macs_fraction=1.0)),
    ({"params": "25%", "latency_ms": "4ms"}, Budget(params_fraction=0.25, latency_ms=4.0)),
    ({"params": "2.5M"}, Budget(params=2_500_000)),
])
def test_budget_takes_numbers_strings_and_fractions(kwargs, expected):
    budget = Budget(**kwargs)
    assert budget == expected
    assert budget.macs is None or type(budget.macs) is int
    assert budget.relative == (expected.macs_fraction is not None or expected.params_fraction is not None)


@pytest.mark.parametrize("kwargs, says", [
    ({"macs": "150M MACs"}, "budget macs '150M MACs' is not a count or a fraction"),
    ({"macs": "0.5"}, "50%"),
    ({"macs": "120%"}, "at most 100%"),
    ({"macs": -1}, "budget macs -1 must be positive"),
    ({"macs": [3]}, "is not a count or a fraction"),
    ({"params": True}, "budget params True"),
    ({"macs": 10, "macs_fraction": 0.5}, "given twice"),
    ({"macs_fraction": 2}, "budget macs_fraction must be a fraction"),
    ({"latency_ms": "soon"}, "latency 'soon' is not a duration"),
    ({}, "no budget given"),
])
def test_budget_refuses_anything_else_in_one_line(kwargs, says):
    with pytest.raises(CompressError) as info:
        Budget(**kwargs)
    assert says in str(info.value) and "\n" not in str(info.value)


def _hand_space() -> SearchSpace:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    return SearchSpace.build(net, (3, 8, 8), channel_multiple=4)


def test_fractions_resolve_to_the_exact_floor():
    space = _hand_space()
    # MACs: 3*8*9*64 = 13824, 8*16*9*64 = 73728, 16*10 = 160 -> 87712
    # params: 3*8*9+8 = 224, 8*16*9+16 = 1168, 16*10+10 = 170 -> 1562
    assert (space.macs(space.full()), space.params(space.full())) == (87712, 1562)
    budget = Budget(macs="33%", params=0.29, latency_ms=5)
    with pytest.raises(CompressError, match="resolved against the model"):
        budget.bounds()  # a fraction is never taken for no bound at all
    resolved = budget.resolved(space)
    # 0.33 * 87712 = 28944.96 -> 28944; 0.29 * 1562 = 452.98 -> 452
    assert (resolved.macs, resolved.params, resolved.latency_ms) == (28944, 452, 5.0)
    assert not resolved.relative and resolved.bounds() == {"macs": 28944, "params": 452, "latency_ms": 5.0}
    assert resolved.resolved(space) is resolved
    assert Budget(macs="100%").resolved(space).fits(space, space.full())
    assert Budget(macs=0.0001).resolved(space).macs == 8  # floor(8.7712)


def test_budget_and_knobs_survive_the_settings_file():
    config = RunConfig(budget=Budget(macs="50%", params="2M"), keep=["layer4.*", "conv1"], kd_lambda=0.3,
                       temperature=2.0, search_cwd=True)
    saved = json.loads(json.dumps({**config.settings(), "budget": config.budget.to_dict()}))
    assert saved["budget"] == {"macs": None, "params": 2_000_000, "latency_ms": None, "macs_fraction": 0.5}
    assert "search_cwd" not in saved and saved["keep"] == ["layer4.*", "conv1"]
    back = config_from_settings(saved, "run.json")
    assert back.budget == config.budget and back.keep == config.keep and back.kd_lambda == 0.3
    assert back.search_cwd is False  # never read from a file
    with pytest.raises(CompressError, match="unknown setting 'search_cwd'"):
        config_from_settings({**saved, "search_cwd": True}, "run.json")
    with pytest.raises(CompressError, match="budget macs must be a whole number"):
        config_from_settings({**saved, "budget": {"macs": "50%"}}, "run.json")  # the file holds what to_dict wrote


@pytest.mark.parametrize("kwargs, says", [
    ({"keep": "layer4.*"}, "setting 'keep' must be a list of strings"),
    ({"keep": ["conv1", 3]}, "setting 'keep' must be a list of strings"),
    ({"keep": [" "]}, "setting 'keep' holds ' '"),
    ({"kd_lambda": 1.5}, "setting 'kd_lambda' is 1.5"),
    ({"temperature": 0}, "setting 'temperature' is 0"),
])
def test_bad_knobs_in_python(kwargs, says):
    with pytest.raises(CompressError, match=says.replace("*", r"\*")):
        RunConfig(budget=Budget(macs=1000), **kwargs)


# --------------------------------------------------------------------------- CLI options
@pytest.mark.parametrize("args, says", [
    (["--budget-macs", "150%"], "--budget-macs '150%' must be above 0% and at most 100%"),
    (["--budget-macs", "0.5"], "--budget-macs '0.5' must be at least 1"),
    (["--budget-params", "half"], "--budget-params 'half' is not a count or a fraction"),
    (["--budget-macs", "50%", "--kd-lambda", "1.5"], "--kd-lambda"),
    (["--budget-macs", "50%", "--kd-temperature", "0"], "--kd-temperature"),
    (["--budget-macs", "50%", "--kd-temperature", "hot"], "--kd-temperature"),
])
def test_bad_options_are_one_line(tmp_path, args, says):
    one_error(invoke(*args, "--out", str(tmp_path / "r"), "-q"), says)
    assert not (tmp_path / "r").exists()


def test_inspect_lists_groups_in_order_and_what_keep_fixes():
    result = invoke("inspect", "--model", "resnet18", "--input-shape", "3x32x32", "--keep", "layer4.*")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "12 channel groups in model order (8 width decisions, 4 fixed)" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit() and "  " in line.strip()]
    assert [r[0] for r in rows] == [str(i) for i in range(1, 13)]
    assert rows[0][4:] == ["conv1", "+", "layer1.0.conv2", "+", "layer1.1.conv2"]
    assert rows[0][2] == "8..64" and rows[-1][2] == "fixed" and "[kept (--keep layer4.*)]" in " ".join(rows[-1])
    assert "[kept (--keep layer4.*: input of layer4.0.conv1)]" in out  # layer3's output, read by layer4
    assert "layer4.1: kept (--keep layer4.*): the residual block stays" in out
    info = json.loads(invoke("inspect", "--model", "resnet18", "--input-shape", "3x32x32", "--keep", "layer4.*",
                             "--json").output)
    assert [g["layers"][0] for g in info["groups"]][:4] == ["conv1", "layer1.0.conv1", "layer1.1.conv1",
                                                            "layer2.0.conv1"]
    assert sum(bool(g["fixed"]) for g in info["groups"]) == 4


def test_inspect_keep_matching_nothing():
    one_error(invoke("inspect", "--model", "resnet18", "--input-shape", "3x32x32", "--keep", "layer9.*"),
              "--keep 'layer9.*' matches no layer of resnet18")


# --------------------------------------------------------------------------- module:function from the cwd
def test_typed_module_is_found_in_the_current_directory(in_tmp_cwd):
    model, spec, _ = resolve_model("tinynet:build", num_classes=4, trust_code=True, search_cwd=True)
    assert spec.name == "tinynet:build" and model[-1].out_features == 4
    result = invoke("inspect", "--model", "tinynet:build", "--input-shape", "3x16x16", "--channel-multiple", "16")
    assert result.exit_code == 0 and "tinynet:build at 3x16x16" in result.output
    # 16 channels at a multiple of 16 leave one choice: fixed, though no --keep or grouping fixes it
    assert "2 channel groups in model order (1 width decisions, 1 fixed)" in result.output
    assert [line.split()[2:] for line in result.output.splitlines() if line.startswith(("    1 ", "    2 "))] == [
        ["fixed", "0"], ["16..32", "(2)", "3"]]


def test_module_from_a_file_is_never_searched_in_the_current_directory(in_tmp_cwd):
    with pytest.raises(CompressError) as info:
        resolve_model("tinynet:build", trust_code=True)  # what a spec read from a file gets
    msg = str(info.value)
    assert "cannot import 'tinynet'" in msg and "looked in the Python path only" in msg and "\n" not in msg


def test_module_not_found_says_where_it_looked(in_tmp_cwd):
    one_error(invoke("inspect", "--model", "nosuchnet:build"),
              f"cannot import 'nosuchnet' for model 'nosuchnet:build': looked in the current directory ({in_tmp_cwd})")


def test_module_in_the_cwd_may_import_its_neighbours(in_tmp_cwd):
    (in_tmp_cwd / "tinyparts.py").write_text("from torch import nn\nWIDTH = 6\n")
    (in_tmp_cwd / "tinynet.py").write_text(
        "from torch import nn\n\n\ndef build():\n    import tinyparts\n"
        "    return nn.Sequential(nn.Conv2d(3, tinyparts.WIDTH, 3))\n")
    try:
        model, _, _ = resolve_model("tinynet:build", trust_code=True, search_cwd=True)
    finally:
        sys.modules.pop("tinyparts", None)
    assert model[0].out_channels == 6


def test_run_with_a_module_in_the_cwd_and_every_knob(in_tmp_cwd):
    """`compress run --model tinynet:build` next to tinynet.py, with a percentage budget, --keep and
    the distillation knobs; compressor.load of its arch.json still refuses the module without trust
    and, trusted, still never imports it from the current directory."""
    out = in_tmp_cwd / "run"
    result = invoke("--model", "tinynet:build", "--budget-macs", "50%", "--keep", "0", "--kd-lambda", "0.5",
                    "--kd-temperature", "2", "--out", str(out), *CHEAP)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    full = report["baseline"]["macs"]
    assert report["budget"]["macs"] == full // 2 and report["compressed"]["macs"] <= full // 2
    assert report["settings"]["keep"] == ["0"] and report["settings"]["kd_lambda"] == 0.5
    assert report["settings"]["temperature"] == 2.0 and "search_cwd" not in report["settings"]
    state = torch.load(out / "model.pt", weights_only=True)
    assert tuple(state["0.weight"].shape) == (16, 3, 3, 3)  # the kept layer
    assert state["3.weight"].shape[0] < 32  # the rest is pruned to meet the budget
    with pytest.raises(CompressError, match="user code that is imported only when you trust its source"):
        compressor.load(out)
    sys.modules.pop("tinynet", None)
    with pytest.raises(CompressError, match="looked in the Python path only"):
        compressor.load(out, trust_code=True)


def test_run_keep_matching_nothing_is_one_line(in_tmp_cwd):
    one_error(invoke("--model", "tinynet:build", "--budget-macs", "50%", "--keep", "features.*",
                     "--out", str(in_tmp_cwd / "run"), *CHEAP),
              "--keep 'features.*' matches no layer of tinynet:build")
    assert not Path(in_tmp_cwd / "run").exists()


def test_resume_refuses_new_knobs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    one_error(invoke("--resume", str(run), "--keep", "conv1"), "--keep cannot change the settings of a resumed run")
    one_error(invoke("--resume", str(run), "--kd-temperature", "3"), "--kd-temperature cannot change the settings")


@pytest.mark.parametrize(("given", "measured"), [([], "fp32"), (["--precision", "int8"], "int8")])
def test_lut_measures_in_the_precision_asked_for(monkeypatch, tmp_path, given, measured):
    import compressor.latency as latency
    from compressor.cli import main

    seen = {}

    class Table:
        def keys(self):
            return ["k"]

    def build(space, net, profile, path, **kw):
        seen.update(kw)
        return Table()

    monkeypatch.setattr(latency, "build_latency_model", build)
    result = CliRunner().invoke(main, ["lut", "--target", "cpu", "--model", "resnet18", "--input-shape", "3x16x16",
                                       "--out", str(tmp_path / "t.json"), "-q", *given])
    assert result.exit_code == 0, result.output
    assert seen["precision"] == (given[1] if given else None) and f"on cpu ({measured})" in result.output

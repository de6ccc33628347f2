"""Files from elsewhere are data: profile TOMLs, run reports and bench JSONs with hostile or wrong
values, ONNX files with absurd inputs, and unwritable ``--out`` paths.

Each case runs the real CLI through click's CliRunner and expects one ``error:`` line on stderr,
exit code 2, no traceback and no file written; the Markdown reports show hostile text as text.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from test_merge import make_bench, make_run

from compressor.cli import main
from compressor.report import markdown
from compressor.run_report import RunReport

HOSTILE = "<script>alert(1)</script> a|b\nx `code` [link](javascript:alert(1)) &amp; \\"


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _one_error_line(result, *what: str) -> str:
    """The single ``error:`` line of a failed command; each of ``what`` must be in it."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not result.stdout.strip(), result.stdout
    for part in what:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def _invoke(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def make_onnx(path: Path, dims) -> Path:
    """A one-node model (global average pool) whose input has ``dims`` (ints, or names for dynamic axes)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["x"], ["y"])], "pool", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


# --------------------------------------------------------------------------------------------
# 4. profile names are file-name safe
# --------------------------------------------------------------------------------------------

CPU_TOML = 'name = {name}\ndevice = "cpu"\nruntimes = ["onnxruntime-cpu"]\ninput_shape = [3, 8, 8]\n'
BAD_NAMES = ["../../../../elsewhere/pwned", "a/b", "..", "a..b", ".hidden", "", "x" * 65, "a b", "c:\\\\x"]


def _profile(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "evil.toml"
    path.write_text(CPU_TOML.format(name=json.dumps(name)))
    return path


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bench_refuses_an_unsafe_profile_name(name, tmp_path):
    toml = _profile(tmp_path, name)
    model = make_onnx(tmp_path / "m.onnx", [1, 3, 8, 8])
    before = _files(tmp_path.parent)
    line = _one_error_line(_invoke("bench", model, "--target", toml, "--runs", 1, "--warmup", 0),
                           str(toml), repr(name), "[A-Za-z0-9]")
    assert "'name'" in line
    assert _files(tmp_path.parent) == before


def test_lut_refuses_an_unsafe_profile_name_before_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    toml = _profile(tmp_path, "../../../../elsewhere/pwned")
    _one_error_line(_invoke("lut", "--target", toml, "--model", "no_such_model"), str(toml), "../../")
    assert not [f for f in _files(tmp_path) if "pwned" in f or "compressor" in f]


def test_safe_profile_names_still_load(tmp_path):
    from profiles import load_profile

    assert load_profile(str(_profile(tmp_path, "my-board_v1.2"))).name == "my-board_v1.2"


# --------------------------------------------------------------------------------------------
# 5. Markdown reports show text from files as text
# --------------------------------------------------------------------------------------------


@pytest.fixture
def hostile_run(tmp_path):
    """A run whose report and a bench of its model hold HTML, pipes, newlines and backticks."""
    run = make_run(tmp_path, "run_a", method="greedy", macs=19_000_000, acc=0.88, p50=0.46)
    report = json.loads((run / "report.json").read_text())
    report["model"] = HOSTILE
    report["method"] = HOSTILE
    report["target"]["name"] = HOSTILE
    report["latency"]["compressed"]["device"] = HOSTILE
    (run / "report.json").write_text(json.dumps(report))
    bench = make_bench(tmp_path / "b.json", run / "model.onnx", 0.25, profile=HOSTILE, device=HOSTILE,
                       runtime=HOSTILE, hostname=HOSTILE)
    result = json.loads(bench.read_text())
    result["model"]["file"] = HOSTILE
    result["profile"]["notes"] = {"power": HOSTILE, HOSTILE: "x"}
    result["host"]["board"] = HOSTILE
    result["host"]["nvpmodel"] = {"name": HOSTILE, "id": 2}
    bench.write_text(json.dumps(result))
    return run, bench


def _tables(md: str) -> list[list[str]]:
    """The Markdown tables of ``md``: runs of lines that start with a pipe."""
    tables, current = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def _assert_inert_markdown(md: str) -> None:
    assert not re.search(r"<[A-Za-z/!?]", md), md  # no HTML tag, comment or processing instruction
    assert "](javascript" not in md.replace("\\]", "")
    assert "`" not in md.replace("\\`", "")
    assert not [line for line in md.splitlines() if line.startswith("x ")], md  # the newline did not split a value
    for table in _tables(md):
        cells = {len(re.findall(r"(?<!\\)\|", line.replace("\\\\", ""))) for line in table}
        assert len(cells) == 1, (cells, table)


def test_merged_markdown_escapes_text_from_json(hostile_run, tmp_path):
    run, bench = hostile_run
    result = _invoke("report", run, bench, "--out", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    md = (tmp_path / "out" / "report.md").read_text()
    _assert_inert_markdown(md)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; a\\|b x" in md
    printed = _invoke("report", run, bench, "-q")
    assert printed.exit_code == 0 and printed.stdout.strip() == md.strip()


def _run_report(text: str) -> dict:
    """A report.json as `compress` writes it, every text field set to ``text``."""
    stats = {"p50": 0.5, "p90": 0.6, "p99": 0.7, "mean": 0.5, "std": 0.01, "throughput": 2000.0, "warmup": 1,
             "runs": 3, "batch": 1, "input_shape": [3, 8, 8], "runtime": text, "device": text, "versions": {},
             "threads": 0, "settings": {"slowest_nodes": [{"node": text, "op": text, "mean_ms": 0.1, "share": 0.5}]}}
    return {
        "model": text, "out": text, "target": {"name": text, "description": text, "notes": {text: text}},
        "method": text, "input_shape": [3, 8, 8], "train_resolution": 8,
        "data": {"source": text, "train": 10, "val": 5}, "budget": {"macs": 1000},
        "baseline": {"macs": 2000, "params": 100, "accuracy": 0.5},
        "compressed": {"macs": 1000, "params": 50, "accuracy": 0.4},
        "latency": {"baseline": stats, "compressed": stats},
        "onnx": {"path": text, "opset": 17, "checker": text, "max_abs_diff": 1e-6},
        "architecture": {"widths": {text: 4}, "dropped_blocks": [text]},
        "fixed_layers": [{"layers": [text], "reason": text}], "notes": [text], "timings_s": {text: 1.0},
    }


def test_run_report_markdown_escapes_text():
    _assert_inert_markdown(markdown(RunReport.from_dict(_run_report(HOSTILE), "hostile")))


def test_run_report_markdown_keeps_plain_text():
    md = markdown(RunReport.from_dict(_run_report("resnet18_v2 (a-b.c)"), "plain"))
    assert "resnet18_v2 (a-b.c)" in md


# --------------------------------------------------------------------------------------------
# 22. report/bench JSON with wrong types, NaN, Infinity, negative figures
# --------------------------------------------------------------------------------------------

NAN = float("nan")
INF = float("inf")

RUN_CASES = [
    (("target",), "cpu", "'target'", "an object"),
    (("target", "notes"), ["a"], "'target.notes'", "an object"),
    (("target", "name"), 5, "'target.name'", "a string"),
    (("architecture",), [1, 2], "'architecture'", "an object"),
    (("architecture", "widths"), [1], "'architecture.widths'", "an object"),
    (("architecture", "dropped_blocks"), "layer1", "'architecture.dropped_blocks'", "a list"),
    (("input_shape",), 64, "'input_shape'", "positive integers"),
    (("notes",), "a note", "'notes'", "a list"),
    (("method",), ["greedy"], "'method'", "a string"),
    (("compressed", "accuracy"), NAN, "'compressed.accuracy'", "NaN"),
    (("compressed", "accuracy"), -0.5, "'compressed.accuracy'", "between 0 and 1"),
    (("compressed", "accuracy"), 1.5, "'compressed.accuracy'", "between 0 and 1"),
    (("baseline", "macs"), -1, "'baseline.macs'", "non-negative"),
    (("latency", "compressed", "p50"), -1.0, "'latency.compressed.p50'", "non-negative"),
    (("latency", "compressed", "p90"), INF, "'latency.compressed.p90'", "Infinity"),
    (("latency", "baseline", "input_shape"), 64, "'latency.baseline.input_shape'", "positive integers"),
    (("latency", "compressed", "device"), ["x"], "'latency.compressed.device'", "a string"),
    (("latency", "compressed", "settings", "x"), NAN, "'latency.compressed.settings.x'", "NaN"),
]

BENCH_CASES = [
    (("host",), "x", "'host'", "an object"),
    (("host", "hostname"), ["a"], "'host.hostname'", "a string"),
    (("host", "nvpmodel"), "MAXN", "'host.nvpmodel'", "an object"),
    (("profile", "notes"), ["a"], "'profile.notes'", "an object"),
    (("profile", "name"), 5, "'profile.name'", "a string"),
    (("runtime",), 5, "'runtime'", "a string"),
    (("model", "sha256"), "not-hex", "'model.sha256'", "64 hex digits"),
    (("model", "file"), 5, "'model.file'", "a string"),
    (("stats", "p50"), NAN, "'stats.p50'", "NaN"),
    (("stats", "p99"), -INF, "'stats.p99'", "Infinity"),
    (("stats", "p50"), -2.0, "'stats.p50'", "non-negative"),
    (("stats", "input_shape"), 64, "'stats.input_shape'", "positive integers"),
    (("created",), 5, "'created'", "a string"),
]


def _set(obj: dict, keys: tuple, value) -> None:
    for key in keys[:-1]:
        obj = obj[key]
    obj[keys[-1]] = value


@pytest.fixture
def run_and_bench(tmp_path):
    run = make_run(tmp_path, "run_a", method="greedy", macs=19_000_000, acc=0.88, p50=0.46)
    return run, make_bench(tmp_path / "b.json", run / "model.onnx", 0.25)


def _spoil(path: Path, keys: tuple, value) -> None:
    obj = json.loads(path.read_text())
    _set(obj, keys, value)
    path.write_text(json.dumps(obj))  # json writes NaN and Infinity literals, as python's json reads them


@pytest.mark.parametrize("keys, value, field, expected", RUN_CASES)
def test_report_refuses_a_run_report_with_a_bad_field(keys, value, field, expected, run_and_bench, tmp_path):
    run, bench = run_and_bench
    _spoil(run / "report.json", keys, value)
    before = _files(tmp_path)
    _one_error_line(_invoke("report", run, bench, "--out", tmp_path / "out"),
                    str(run / "report.json"), field, expected)
    assert _files(tmp_path) == before


@pytest.mark.parametrize("keys, value, field, expected", BENCH_CASES)
def test_report_refuses_a_bench_json_with_a_bad_field(keys, value, field, expected, run_and_bench, tmp_path):
    run, bench = run_and_bench
    _spoil(bench, keys, value)
    before = _files(tmp_path)
    _one_error_line(_invoke("report", run, bench, "--out", tmp_path / "out"), str(bench), field, expected)
    assert _files(tmp_path) == before


def test_report_skips_a_bad_bench_found_in_the_run_directory(run_and_bench, tmp_path):
    """A bench JSON nobody named is left out with a warning, as any unreadable file found there."""
    run, bench = run_and_bench
    found = run / "model.cpu.bench.json"
    bench.rename(found)
    _spoil(found, ("stats", "p50"), NAN)
    result = _invoke("report", run, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "skipping" in result.stderr and "'stats.p50'" in result.stderr
    assert "NaN" not in (tmp_path / "out" / "merged.json").read_text()


# --------------------------------------------------------------------------------------------
# 20. an --out that cannot be written
# --------------------------------------------------------------------------------------------

BAD_OUT = ["/proc/x", "{tmp}/file.txt/sub"]


@pytest.mark.parametrize("out", BAD_OUT)
def test_report_to_an_unwritable_out(out, run_and_bench, tmp_path):
    run, bench = run_and_bench
    (tmp_path / "file.txt").write_text("mine")
    out = out.format(tmp=tmp_path)
    before = _files(tmp_path)
    _one_error_line(_invoke("report", run, bench, "--out", out), "cannot write", out, "choose another --out")
    assert _files(tmp_path) == before and (tmp_path / "file.txt").read_text() == "mine"


def test_report_that_fails_midway_leaves_no_part_of_it(run_and_bench, tmp_path, monkeypatch):
    """A disk that fills after report.md: the files and folder this command made are removed."""
    import errno

    from compressor import merge as merge_mod

    def full_disk(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(merge_mod, "write_json", full_disk)
    run, bench = run_and_bench
    out = tmp_path / "new" / "out"
    (tmp_path / "new").mkdir()
    _one_error_line(_invoke("report", run, bench, "--out", out), f"cannot write {out}", "no space left on device")
    assert not out.exists()


@pytest.mark.parametrize("out", BAD_OUT)
def test_bench_to_an_unwritable_out(out, tmp_path):
    model = make_onnx(tmp_path / "m.onnx", [1, 3, 8, 8])
    (tmp_path / "file.txt").write_text("mine")
    out = out.format(tmp=tmp_path) + ".json"
    before = _files(tmp_path)
    _one_error_line(_invoke("bench", model, "--target", "cpu", "--runs", 1, "--warmup", 0, "--out", out, "-q"),
                    "cannot write", out, "choose another --out")
    assert _files(tmp_path) == before and (tmp_path / "file.txt").read_text() == "mine"


# --------------------------------------------------------------------------------------------
# 23. an ONNX input too large to allocate
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dims, given", [([1, 3, 100000, 100000], None), ([1, 3, 20000, 8], None),
                                         (["n", 3, "h", "w"], "3x20000x20000")])
def test_bench_refuses_a_huge_input_before_allocating(dims, given, tmp_path):
    model = make_onnx(tmp_path / "m.onnx", dims)
    before = _files(tmp_path)
    args = ["bench", model, "--target", "cpu", "--runs", 1, "--warmup", 0] + (["--input-shape", given] if given else [])
    _one_error_line(_invoke(*args), "m.onnx", "--input-shape")
    assert _files(tmp_path) == before


def test_bench_of_a_dynamic_input_takes_the_profile_or_given_shape(tmp_path):
    model = make_onnx(tmp_path / "m.onnx", ["n", 3, "h", "w"])
    for given, shape in ((None, [3, 224, 224]), ("3x32x40", [3, 32, 40])):
        out = tmp_path / "b.json"
        args = ["bench", model, "--target", "cpu", "--runs", 1, "--warmup", 0, "--threads", 1, "--out", out]
        result = _invoke(*args, *(["--input-shape", given] if given else []))
        assert result.exit_code == 0, result.output
        assert json.loads(out.read_text())["stats"]["input_shape"] == shape

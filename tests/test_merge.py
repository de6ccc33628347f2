"""compress report: merging run directories and bench JSONs (matched by the model file's SHA-256); each
run's warnings and the uncertainty of its own figures in the merged pages."""
from __future__ import annotations

import hashlib
import json
import logging
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from compress_base.errors import CompressError
from compressor import merge as merge_mod
from compressor import merge_render, report_html
from compressor.merge import merge_reports, merged_markdown, write_merged
from compressor.report import markdown
from compressor.report_warnings import warnings_of
from compressor.run_report import RunReport


class Tags(HTMLParser):
    VOID = frozenset({"br", "hr", "img", "meta", "link", "input"})

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.imgs, self.tags = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.errors.append(tag)


def _stats(p50, device="AMD EPYC", runtime="onnxruntime-cpu"):
    return {"p50": p50, "p90": p50 * 1.2, "p99": p50 * 1.5, "mean": p50, "std": 0.0, "throughput": 1000 / p50,
            "warmup": 10, "runs": 50, "batch": 1, "input_shape": [3, 64, 64], "runtime": runtime,
            "device": device, "versions": {}, "threads": 0, "settings": {}}


def make_run(root: Path, name: str, *, method: str, macs: int, acc: float, p50: float, base_p50: float = 2.0,
             model_bytes: bytes | None = None, baseline_bytes: bytes = b"baseline-weights") -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "model.onnx").write_bytes(model_bytes or f"model of {name}".encode())
    (d / "baseline.onnx").write_bytes(baseline_bytes)
    report = {
        "model": "resnet18", "out": str(d), "method": method, "input_shape": [3, 64, 64],
        "target": {"name": "cpu", "description": "server CPU", "notes": {"power": "not controlled"}},
        "budget": {"macs": 20_000_000},
        "baseline": {"macs": 148_050_944, "params": 11_181_642, "accuracy": 0.9137},
        "compressed": {"macs": macs, "params": 2_000_000, "accuracy": acc},
        "latency": {"baseline": _stats(base_p50), "compressed": _stats(p50)},
        "architecture": {"widths": {"conv1": 8, "layer1.0.conv1": 64},
                         "full_widths": {"conv1": 64, "layer1.0.conv1": 64},
                         "blocks": {"layer1.1": False}, "dropped_blocks": ["layer1.1"]},
    }
    (d / "report.json").write_text(json.dumps(report))
    return d


def make_bench(path: Path, model_file: Path, p50: float, *, profile="jetson-orin-nano", device="Orin",
               runtime="tensorrt", hostname="orin1", created="2025-01-01T00:00:00+00:00") -> Path:
    result = {
        "format": 1, "created": created,
        "model": {"file": model_file.name, "path": f"/home/me/{model_file.name}", "format": "onnx",
                  "bytes": model_file.stat().st_size, "sha256": hashlib.sha256(model_file.read_bytes()).hexdigest()},
        "profile": {"name": profile, "description": "Jetson Orin Nano", "device": "gpu", "precision": "fp16",
                    "notes": {"power_mode": "sudo nvpmodel -m 2 (MAXN_SUPER)"}},
        "runtime": runtime, "stats": _stats(p50, device, runtime),
        "host": {"hostname": hostname, "board": "NVIDIA Jetson Orin Nano", "nvpmodel": {"name": "MAXN_SUPER", "id": 2}},
    }
    path.write_text(json.dumps(result))
    return path


@pytest.fixture
def two_runs(tmp_path):
    a = make_run(tmp_path, "run_a", method="greedy", macs=19_575_808, acc=0.8803, p50=0.4603, base_p50=1.5086)
    b = make_run(tmp_path, "run_b", method="uniform", macs=19_900_000, acc=0.8512, p50=0.3530, base_p50=1.6)
    bench = make_bench(tmp_path / "orin.json", a / "model.onnx", 0.25)
    return a, b, bench


def _row(md: str, *cells: str) -> list[str]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| ")]
    hits = [r for r in rows if all(c in r for c in cells)]
    assert len(hits) == 1, (cells, rows)
    return hits[0]


def test_two_runs_and_a_bench_matched_by_sha(two_runs):
    a, b, bench = two_runs
    merged = merge_reports([a, b, bench])
    assert [r["name"] for r in merged["runs"]] == ["run_a", "run_b"]
    assert merged["benches"][0]["matched"] == [{"run": "run_a", "role": "compressed", "file": "model.onnx"}]
    assert not merged["unmatched"]
    md = merged_markdown(merged)
    header = _row(md, "run", "device")
    run_dev = "AMD EPYC (onnxruntime-cpu, cpu)"
    orin = "Orin (tensorrt, jetson-orin-nano)"
    row = dict(zip(header, _row(md, "run_a", run_dev)))
    # no rounds, no validation size recorded: the speed-up to two digits, as the run's own report has it
    assert row == {"run": "run_a", "model": "resnet18", "method": "greedy", "device": run_dev,
                   "original p50 (ms)": "1.509", "compressed p50 (ms)": "0.460", "speed-up": "3.3x",
                   "original accuracy": "91.37%", "compressed accuracy": "88.03%",
                   "original MACs": "148M", "compressed MACs": "19.6M"}
    row = dict(zip(header, _row(md, "run_a", orin)))
    assert (row["original p50 (ms)"], row["compressed p50 (ms)"], row["speed-up"]) == ("-", "0.250", "-")
    row = dict(zip(header, _row(md, "run_b", run_dev)))
    assert (row["compressed p50 (ms)"], row["speed-up"], row["compressed accuracy"], row["compressed MACs"]) == (
        "0.353", "4.5x", "85.12%", "19.9M")
    assert not [line for line in md.splitlines() if line.startswith("| run_b") and orin in line]
    assert "power mode MAXN_SUPER (id 2)" in md and "sudo nvpmodel -m 2 (MAXN_SUPER)" in md


def test_original_and_compressed_benches_share_a_row_and_shared_baselines_match_all_runs(two_runs, tmp_path):
    a, b, _ = two_runs
    comp = make_bench(tmp_path / "a_model.json", a / "model.onnx", 0.25)
    base = make_bench(tmp_path / "baseline.json", a / "baseline.onnx", 1.0)  # same bytes in both runs
    merged = merge_reports([a, b, comp, base])
    md = merged_markdown(merged)
    orin = "Orin (tensorrt, jetson-orin-nano)"
    assert _row(md, "run_a", orin)[4:7] == ["1.000", "0.250", "4.00x"]
    assert _row(md, "run_b", orin)[4:7] == ["1.000", "-", "-"]
    assert {m["run"] for m in merged["benches"][1]["matched"]} == {"run_a", "run_b"}


def test_same_device_label_from_run_and_bench_is_told_apart(two_runs, tmp_path):
    a, b, _ = two_runs
    bench = make_bench(tmp_path / "cpu.json", b / "model.onnx", 0.3, profile="cpu", device="AMD EPYC",
                       runtime="onnxruntime-cpu", hostname="box")
    labels = [d["label"] for d in merge_reports([a, b, bench])["devices"]]
    assert labels == ["AMD EPYC (onnxruntime-cpu, cpu) [compress run]", "AMD EPYC (onnxruntime-cpu, cpu) @ box"]


def test_bench_files_inside_a_run_dir_are_picked_up(two_runs):
    a, b, _ = two_runs
    make_bench(a / "model.jetson-orin-nano.bench.json", a / "model.onnx", 0.2)
    merged = merge_reports([a, b, a])  # a twice: used once
    assert len(merged["runs"]) == 2
    assert _row(merged_markdown(merged), "run_a", "Orin (tensorrt, jetson-orin-nano)")[5] == "0.200"


def test_newer_bench_of_the_same_model_and_device_wins(two_runs, tmp_path):
    a, _, _ = two_runs
    old = make_bench(tmp_path / "old.json", a / "model.onnx", 0.5, created="2025-01-01T00:00:00+00:00")
    new = make_bench(tmp_path / "new.json", a / "model.onnx", 0.2, created="2025-02-01T00:00:00+00:00")
    for order in ([new, old], [old, new]):
        md = merged_markdown(merge_reports([a, *order]))
        assert _row(md, "run_a", "Orin (tensorrt, jetson-orin-nano)")[5] == "0.200"


def test_unmatched_bench_is_a_warning(two_runs, tmp_path, caplog):
    a, _, _ = two_runs
    other = tmp_path / "other.onnx"
    other.write_bytes(b"something else")
    stray = make_bench(tmp_path / "stray.json", other, 0.1)
    with caplog.at_level(logging.WARNING, logger="compressor.merge"):
        merged = merge_reports([a, stray])
    assert merged["unmatched"] == [str(stray)]
    assert "matches no model file" in caplog.text
    assert "Orin" not in merged_markdown(merged).split("## Bench files")[0]


def test_run_dirs_with_the_same_name(tmp_path):
    x = make_run(tmp_path / "x", "run", method="greedy", macs=1_000_000, acc=0.5, p50=0.1)
    y = make_run(tmp_path / "y", "run", method="greedy", macs=2_000_000, acc=0.6, p50=0.2)
    assert [r["name"] for r in merge_reports([x, y])["runs"]] == ["x/run", "y/run"]


def test_report_json_path_and_nas_run_without_baseline(tmp_path):
    d = make_run(tmp_path, "nas", method="autoshrink-cell", macs=5_000_000, acc=0.7, p50=0.1)
    report = json.loads((d / "report.json").read_text())
    report["baseline"] = None
    del report["latency"]["baseline"]
    report["architecture"] = {"cell_edges": [[0, 1]], "dropped_blocks": []}
    (d / "report.json").write_text(json.dumps(report))
    merged = merge_reports([d / "report.json"])
    row = _row(merged_markdown(merged), "nas")
    assert row[4:11] == ["-", "0.100", "-", "-", "70.00%", "-", "5M"]


def _edit(run_dir: Path, **fields) -> dict:
    """Change fields of the run's report.json; the new report."""
    report = {**json.loads((run_dir / "report.json").read_text()), **fields}
    (run_dir / "report.json").write_text(json.dumps(report))
    return report


def test_run_rows_show_the_rounds_and_the_accuracy_standard_error(two_runs):
    a, b, bench = two_runs
    report = json.loads((a / "report.json").read_text())
    base, comp = report["latency"]["baseline"], report["latency"]["compressed"]
    _edit(a, data={"source": "digits", "train": 1437, "val": 1000, "num_classes": 10},
          latency={"baseline": {**base, "p50": 1.50, "rounds": [1.50, 1.52, 1.48]},
                   "compressed": {**comp, "p50": 0.46, "rounds": [0.46, 0.47, 0.45]}})
    merged = merge_reports([a, b, bench])
    assert merged["runs"][0]["validation_images"] == 1000 and merged["runs"][1]["validation_images"] is None
    md = merged_markdown(merged)
    header = _row(md, "run", "device")
    row = dict(zip(header, _row(md, "run_a", "AMD EPYC (onnxruntime-cpu, cpu)")))
    # rounds 1.48-1.52: +-0.02, two decimals; 0.45-0.47: +-0.01, three; per-round ratios 3.234-3.289
    assert (row["original p50 (ms)"], row["compressed p50 (ms)"], row["speed-up"]) == (
        "1.50 (rounds 1.48-1.52)", "0.460 (rounds 0.450-0.470)", "3.26x (3.23-3.29)")
    # standard errors sqrt(p (1 - p) / 1000): 0.89 and 1.03 points
    assert (row["original accuracy"], row["compressed accuracy"]) == ("91.4% ± 0.9 (n=1000)", "88.0% ± 1.0 (n=1000)")
    # the bench row shows what the bench measured, as before; the accuracy is the run's
    row = dict(zip(header, _row(md, "run_a", "Orin (tensorrt, jetson-orin-nano)")))
    assert (row["original p50 (ms)"], row["compressed p50 (ms)"], row["speed-up"]) == ("-", "0.250", "-")
    assert row["compressed accuracy"] == "88.0% ± 1.0 (n=1000)"
    assert _row(md, "run_b", "AMD EPYC (onnxruntime-cpu, cpu)")[8] == "85.12%"  # no n recorded: as before
    text = merge_mod.merged_html(merged)
    assert "1.50 (rounds 1.48-1.52)" in text and "3.26x (3.23-3.29)" in text and "91.4% ± 0.9 (n=1000)" in text


def _percentile_rows(text: str) -> dict[tuple[str, str], list[str]]:
    """The HTML percentile table's cells after (run, device), by (run, device)."""
    table = text.split("<h2>Latency percentiles (ms)</h2>")[1].split("</table>")[0]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in table.split("<tr>")[2:]]
    return {(r[0], r[1]): r[2:] for r in rows}


def test_percentiles_have_the_digits_their_p50_supports_as_in_a_runs_own_report(two_runs, tmp_path, monkeypatch):
    a, b, _ = two_runs
    report = json.loads((a / "report.json").read_text())
    base, comp = report["latency"]["baseline"], report["latency"]["compressed"]
    # rounds 1.48-1.52: +-0.02, two decimals; 0.45-0.47: +-0.01, three
    _edit(a, latency={"baseline": {**base, "p50": 1.50, "p90": 1.8104, "p99": 2.2629, "rounds": [1.50, 1.52, 1.48]},
                      "compressed": {**comp, "p50": 0.46, "p90": 0.5523, "p99": 0.6881,
                                     "rounds": [0.46, 0.47, 0.45]}})
    # no rounds: 1.25 * 0.4 / sqrt(100) = 0.05, two decimals; std 0 says nothing: three
    _edit(b, latency={"baseline": {**base, "p50": 1.6, "p90": 1.9217, "p99": 2.4031, "std": 0.4, "runs": 100},
                      "compressed": {**comp, "p50": 0.353, "p90": 0.4236, "p99": 0.5296}})
    # a bench of 10 runs with std 0.2: 1.25 * 0.2 / sqrt(10) = 0.079, two decimals; one with only the
    # percentiles (all a bench file needs): three
    spread = make_bench(tmp_path / "orin_a.json", a / "model.onnx", 0.25)
    result = json.loads(spread.read_text())
    result["stats"].update(p90=0.3111, p99=0.4321, std=0.2, runs=10)
    spread.write_text(json.dumps(result))
    bare = make_bench(tmp_path / "orin_b.json", b / "model.onnx", 0.2)
    result = json.loads(bare.read_text())
    result["stats"] = {"p50": 0.2, "p90": 0.2512, "p99": 0.3104, "device": "Orin"}
    bare.write_text(json.dumps(result))
    monkeypatch.setattr(report_html, "have_matplotlib", lambda: False)
    merged = merge_reports([a, b, spread, bare])
    cpu, orin = "AMD EPYC (onnxruntime-cpu, cpu)", "Orin (tensorrt, jetson-orin-nano)"
    assert _percentile_rows(merge_mod.merged_html(merged)) == {
        ("run_a", cpu): ["1.50", "1.81", "2.26", "0.460", "0.552", "0.688"],
        ("run_b", cpu): ["1.60", "1.92", "2.40", "0.353", "0.424", "0.530"],
        ("run_a", orin): ["-", "-", "-", "0.25", "0.31", "0.43"],
        ("run_b", orin): ["-", "-", "-", "0.200", "0.251", "0.310"]}
    # a run's tails as its own report.md shows them
    single = markdown(RunReport.from_dict(json.loads((a / "report.json").read_text()), "a"))
    assert _row(single, "latency p90 (ms)")[1:3] == ["1.81", "0.552"]
    # the main table's bench p50s have the same digits
    md = merged_markdown(merged)
    assert _row(md, "run_a", orin)[5] == "0.25" and _row(md, "run_b", orin)[5] == "0.200"


def test_each_runs_warnings_are_in_the_merged_report(two_runs, tmp_path):
    a, b, _ = two_runs
    report = _edit(b, compressed={"macs": 19_900_000, "params": 2_000_000, "accuracy": 0.9100})  # 0.37 points lost
    unmeasured = make_run(tmp_path, "run_c", method="greedy", macs=19_000_000, acc=0.9137, p50=0.3)
    _edit(unmeasured, latency={}, target={"name": "jetson-orin-nano", "runtimes": ["tensorrt"]})
    merged = merge_reports([a, b, unmeasured])
    # the same warnings as each run's own report (report_warnings on its RunReport)
    assert merged["runs"][0]["warnings"] == [w.to_dict() for w in warnings_of(RunReport.from_dict(
        json.loads((a / "report.json").read_text())))]
    assert [[w["kind"] for w in r["warnings"]] for r in merged["runs"]] == [["accuracy_drop"], [], ["not_measured"]]
    assert not warnings_of(RunReport.from_dict(report))
    drop = merged["runs"][0]["warnings"][0]["message"]
    assert drop.startswith("accuracy fell 3.3 points, from 91.4% to 88.0%")
    md = merged_markdown(merged)
    section = md.split("## Warnings (2)")[1].split("## Devices")[0]
    assert f"- run_a: **accuracy_drop**: {drop}" in section and "- run_c: **not_measured**: " in section
    assert "run_b" not in section
    parser = Tags()
    text = merge_mod.merged_html(merged)
    parser.feed(text)
    assert not parser.errors and 'id="warnings">Warnings (2)' in text
    assert f'<b>run_a</b>: <span class="kind">accuracy_drop</span>: {drop}' in text
    # a bench of run_c's model on its target's device answers not_measured; a clean merge says so
    bench = make_bench(tmp_path / "c.json", unmeasured / "model.onnx", 0.2)
    assert merge_reports([unmeasured, bench])["runs"][0]["warnings"] == []
    clean = merge_reports([b])
    assert "None: no check found a problem in any run" in merged_markdown(clean)
    assert "No warnings: every check passed in every run." in merge_mod.merged_html(clean)


@pytest.mark.parametrize("setup, message", [
    (lambda t: t / "missing", "does not exist"),
    (lambda t: t, "is not a run directory"),
    (lambda t: _write(t / "model.onnx", "x"), "neither a run directory nor a bench JSON"),
    (lambda t: _write(t / "broken.json", "{not json"), "is not valid JSON"),
    (lambda t: _write(t / "other.json", '{"hello": 1}'), "neither a run report nor a bench JSON"),
    (lambda t: _write(t / "list.json", "[1, 2]"), "neither a run report nor a bench JSON"),
    (lambda t: _write(t / "r" / "report.json", '{"model": "m", "compressed": {}, "latency": {}}'),
     "compressed has no macs/params/accuracy"),
    (lambda t: _write(t / "nosha.json", '{"model": {"file": "m.onnx"}, "stats": {"p50": 1, "p90": 1, "p99": 1}, '
                                         '"profile": {"name": "cpu"}}'), "without the model file's sha256"),
])
def test_bad_inputs_are_one_line_errors(tmp_path, setup, message):
    path = setup(tmp_path)
    if path.name == "report.json":
        path = path.parent
    with pytest.raises(CompressError, match=message) as info:
        merge_reports([path])
    assert "\n" not in str(info.value)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_no_runs_is_an_error(two_runs):
    _, _, bench = two_runs
    with pytest.raises(CompressError, match="no run directories"):
        merge_reports([bench])
    with pytest.raises(CompressError, match="nothing to report"):
        merge_reports([])


def test_write_merged(two_runs, tmp_path):
    a, b, bench = two_runs
    merged = merge_reports([a, b, bench])
    out = tmp_path / "merged"
    written = write_merged(out, merged)
    assert sorted(p.name for p in out.iterdir()) == ["merged.json", "report.html", "report.md"]
    assert [p.name for p in written] == ["report.md", "report.html", "merged.json"]
    assert (out / "report.md").read_text() == merged_markdown(merged)
    assert json.loads((out / "merged.json").read_text()) == merged
    text = (out / "report.html").read_text(encoding="utf-8")
    parser = Tags()
    parser.feed(text)
    assert not parser.errors and not parser.stack
    # latency per device, accuracy vs latency, kept channels of each run
    assert len(parser.imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in parser.imgs)
    for value in ("0.250", "0.460", "3.3x", "88.03%", "19.6M", "MAXN_SUPER", "run_b"):
        assert value in text


def test_write_merged_refuses_a_run_dir_and_leaves_nothing_on_failure(two_runs, tmp_path, monkeypatch):
    a, b, bench = two_runs
    merged = merge_reports([a, b, bench])
    with pytest.raises(CompressError, match="is the run directory of run_a"):
        write_merged(a, merged)
    monkeypatch.setattr(merge_render, "main_rows", lambda merged: 1 / 0)
    out = tmp_path / "merged"
    with pytest.raises(ZeroDivisionError):
        write_merged(out, merged)
    assert not out.exists() or not list(out.iterdir())


def test_a_failing_plot_becomes_a_note(two_runs, monkeypatch, caplog):
    a, b, bench = two_runs
    monkeypatch.setattr(merge_render, "scatter_figure", lambda series: 1 / 0)
    with caplog.at_level(logging.WARNING, logger="compressor.report_html"):
        text = merge_mod.merged_html(merge_reports([a, b, bench]))
    assert "accuracy_latency plot could not be drawn (ZeroDivisionError" in text
    assert "could not draw the accuracy_latency plot" in caplog.text
    parser = Tags()
    parser.feed(text)
    assert len(parser.imgs) == 3 and not parser.errors


def test_html_escapes_names(two_runs):
    a, _, _ = two_runs
    report = json.loads((a / "report.json").read_text())
    report["model"] = "<script>alert(1)</script>"
    (a / "report.json").write_text(json.dumps(report))
    text = merge_mod.merged_html(merge_reports([a]))
    parser = Tags()
    parser.feed(text)
    assert "script" not in parser.tags and "&lt;script&gt;alert(1)&lt;/script&gt;" in text

"""report.html: a self-contained page that parses, carries the report's figures and plots, escapes
text, and is written atomically."""
from __future__ import annotations

import base64
import copy
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from compressor import report_html, report_page
from compressor.report_page import html_report, write_html
from compressor.report_summary import summary_rows
from compressor.run_report import RunReport

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Checker(HTMLParser):
    """Collects tags and checks that every non-void element is closed in order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.tags, self.errors, self.imgs, self.text = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> Checker:
    c = Checker()
    c.feed(text)
    c.close()
    assert not c.errors, c.errors[:5]
    assert not c.stack, f"unclosed: {c.stack}"
    return c


def _stats(p50, p90, p99, device="AMD EPYC"):
    return {"p50": p50, "p90": p90, "p99": p99, "mean": p50 * 1.1, "std": 0.01, "throughput": 1000 / p50,
            "warmup": 10, "runs": 50, "batch": 1, "input_shape": [3, 64, 64], "runtime": "onnxruntime-cpu",
            "device": device, "versions": {"onnxruntime": "1.18.0"}, "threads": 0,
            "settings": {"providers": ["CPUExecutionProvider"]}}


def make_report(model="resnet18") -> dict:
    widths = {"conv1": 8, "layer1.0.conv1": 64, "layer2.0.conv1": 128, "layer2.1.conv1": 128,
              "layer2.0.downsample.0": 16}
    return {
        "model": model, "weights": None, "out": "/runs/r1",
        "target": {"name": "jetson-orin-nano", "description": "Jetson Orin Nano 8GB", "device": "gpu",
                   "runtimes": ["tensorrt"], "precision": "fp16", "batch": 1, "input_shape": [3, 224, 224],
                   "channel_multiple": 8, "measure": {"warmup": 10, "runs": 50, "threads": 0},
                   "notes": {"power_mode": "sudo nvpmodel -m 2 (MAXN_SUPER)", "clocks": "sudo jetson_clocks"},
                   "source": "profiles/jetson-orin-nano.toml"},
        "method": "greedy", "input_shape": [3, 64, 64], "train_resolution": 16,
        "data": {"source": "sklearn digits", "train": 1438, "val": 359, "num_classes": 10},
        "budget": {"macs": 20_000_000, "params": None, "latency_ms": 0.8},
        "baseline": {"macs": 148_050_944, "params": 11_181_642, "accuracy": 0.9137,
                     "latency_ms": {"p50": 1.5086, "p90": 1.62, "p99": 1.9}},
        "compressed": {"macs": 19_575_808, "params": 2_691_090, "accuracy": 0.8803,
                       "latency_ms": {"p50": 0.4603, "p90": 0.51, "p99": 0.62}},
        "latency": {"baseline": _stats(1.5086, 1.62, 1.9), "compressed": _stats(0.4603, 0.51, 0.62)},
        "onnx": {"path": "model.onnx", "opset": 17, "max_abs_diff": 7.63e-06, "checker": "passed"},
        "architecture": {"file": "arch.json", "widths": widths,
                         "full_widths": {"conv1": 64, "layer1.0.conv1": 64, "layer2.0.conv1": 128,
                                         "layer2.1.conv1": 128, "layer2.0.downsample.0": 128},
                         "blocks": {"layer1.0": True, "layer2.1": False}, "dropped_blocks": ["layer2.1"]},
        "fixed_layers": [{"layers": ["fc"], "reason": "the classifier's outputs are the classes"}],
        "search": {"steps": 3, "file": "search.json"}, "notes": ["a note & more"],
        "timings_s": {"data": 0.7, "teacher_training": 16.0, "fine_tuning": 6.7},
    }


def typed(report: dict) -> RunReport:
    return RunReport.from_dict(report, "test report")


def page_of(report: dict, **kwargs) -> str:
    return html_report(typed(report), **kwargs)


@pytest.fixture(scope="module")
def page_text():
    return page_of(make_report())


def test_page_parses_and_is_balanced(page_text):
    c = parse(page_text)
    assert page_text.startswith("<!DOCTYPE html>")
    assert {"html", "head", "style", "body", "table", "img"} <= set(c.tags)
    assert "script" not in c.tags and "link" not in c.tags  # no external (or any) JS / CSS files


def test_page_has_the_report_figures(page_text):
    header, rows = summary_rows(typed(make_report()))
    assert header == ["", "original", "compressed", "change"]
    for row in rows:
        for cell in row:
            assert report_html.esc(cell) in page_text
    for value in ("148M", "19.6M", "11.2M", "2.69M", "91.4% ± 1.5 (n=359)", "88.0% ± 1.7 (n=359)", "1.5086 ms",
                  "0.4603 ms", "13.2%", "speed-up 3.3x",
                  "7.63e-06", "passed", "opset 17", "sudo nvpmodel -m 2 (MAXN_SUPER)", "sudo jetson_clocks",
                  "teacher_training", "16.0", "23.4",  # total of the stage timings
                  "layer2.1", "the classifier&#x27;s outputs are the classes", "a note &amp; more",
                  "macs &lt;= 20M", "latency_ms &lt;= 0.8 ms", "12.5%"):
        assert value in page_text, value


def test_page_embeds_png_plots(page_text):
    imgs = parse(page_text).imgs
    assert len(imgs) == 4  # accuracy vs MACs and vs latency, latency, kept channels
    for img in imgs:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
        assert img["alt"]


def test_text_is_escaped():
    report = make_report(model='evil<script>alert("x")</script>$a$')
    report["notes"] = ["<b>bold</b>"]
    report["target"]["notes"]["clocks"] = "<img src=x onerror=alert(1)>"
    report["architecture"]["dropped_blocks"] = ["layer2.1"]
    text = page_of(report)
    c = parse(text)
    assert "script" not in c.tags and "b" not in c.tags
    assert len(c.imgs) == 4  # only the plots
    assert "<script>" not in text and "<b>bold" not in text
    assert "evil&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;$a$" in text
    assert 'evil<script>alert("x")</script>$a$' in "".join(c.text)


def test_nas_report_without_baseline_or_widths():
    report = make_report("shrinkcnn")
    report["baseline"] = None
    del report["latency"]["baseline"]
    report["architecture"] = {"file": "arch.json", "cell_edges": [[0, 1, "conv3x3"]], "dropped_blocks": []}
    text = page_of(report)
    c = parse(text)
    assert len(c.imgs) == 1 and "conv3x3" in text and "88.0% ± 1.7" in text
    assert "baseline" not in summary_rows(typed(report))[0]


def test_widths_without_originals_plot_kept_channels():
    report = make_report()
    del report["architecture"]["full_widths"]
    text = page_of(report)
    assert len(parse(text).imgs) == 4 and "kept %" not in text


def test_without_matplotlib_the_page_says_so(monkeypatch):
    monkeypatch.setattr(report_html, "have_matplotlib", lambda: False)
    text = page_of(make_report())
    assert not parse(text).imgs and "pip install matplotlib" in text and "91.4% ± 1.5" in text


def test_write_html_is_atomic(tmp_path):
    path = write_html(tmp_path, typed(make_report()))
    assert path == tmp_path / "report.html"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary files left
    parse(path.read_text(encoding="utf-8"))


def test_failing_render_or_write_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "report.html").write_text("old")
    monkeypatch.setattr(report_page, "summary_rows", lambda r: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_html(tmp_path, typed(make_report()))
    monkeypatch.undo()

    real = Path.write_text

    def half_then_fail(self, text, *a, **k):
        real(self, text[:100], *a, **k)
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError):
        write_html(tmp_path, typed(make_report()))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    assert (tmp_path / "report.html").read_text() == "old"


def test_plots_as_files(tmp_path):
    write_html(tmp_path, typed(make_report()), inline=False)
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    srcs = [img["src"] for img in parse(text).imgs]
    assert srcs == ["plots/accuracy_vs_macs.png", "plots/accuracy_vs_latency.png", "plots/latency.png",
                    "plots/widths.png"]
    for src in srcs:
        assert (tmp_path / src).read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.rglob("*") if re.search(r"\.tmp$", p.name)]


def test_report_is_not_modified(page_text):
    report = make_report()
    before = copy.deepcopy(report)
    page_of(report)
    assert report == before


@pytest.mark.parametrize("held,command,lead", [
    (None, "compress run --model resnet18 --budget-macs 20000000",
     "The command with this run's settings (its data and model as named there):"),
    (["model", "data"], "compressor.compress(model, train_loader=train_loader, val_loader=val_loader, macs=20000000)"
                        "  # model is your nets:Net (as given, before compression); train_loader and val_loader are "
                        "your DataLoaders",
     "The compressor.compress() call with this run's settings (model, train_loader and val_loader stand for the "
     "model and DataLoaders it held in memory, as its comment says):"),
    (["model"], "compressor.compress(model, macs=20000000, data='/data/digits')  # model is your nets:Net (as given, "
                "before compression)",
     "The compressor.compress() call with this run's settings (model stands for the model it held in memory, as its "
     "comment says; its data as named there):"),
    (["data"], "compressor.compress('resnet18', train_loader=train_loader, val_loader=val_loader, macs=20000000)  # "
               "train_loader and val_loader are your DataLoaders",
     "The compressor.compress() call with this run's settings (train_loader and val_loader stand for the DataLoaders "
     "it held in memory, as its comment says; its model as named there):"),
])
def test_the_reproduce_lead_says_whether_it_is_the_command_or_the_python_call(monkeypatch, held, command, lead):
    from compressor.report import markdown

    monkeypatch.setattr(report_html, "have_matplotlib", lambda: False)
    report = make_report()
    report["settings"] = {"model": "resnet18", "in_memory": held}
    report["reproduce"] = {"command": command, "process": "python train.py", "versions": {"torch": "2.4.0"}}
    section = page_of(report).split('<h2 id="reproduce">')[1]
    assert section.startswith(f"Reproduce</h2><p>{report_html.esc(lead)}</p><pre>{report_html.esc(command)}</pre>")
    md = markdown(typed(report)).split("## Reproduce\n\n")[1].splitlines()
    assert md[:4] == [lead, "", "```", command]

"""report.html as a reader sees it: rendered by headless Chromium (Debian's ``chromium``, which
.ci/run installs), every section and figure is in the page's rendered text (``innerText``, which
follows the layout and CSS) and every plot decodes to an image."""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess

import pytest
from test_report_html import _stats, make_report

from compressor.report import write_reports
from compressor.run_report import RunReport

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium: apt-get install chromium "
                                "(.ci/run installs it)")

# Added to a copy of the page only: after loading, write what the browser rendered into the DOM.
PROBE = """<script>window.addEventListener("load", () => {
  const out = document.createElement("pre"); out.id = "probe";
  out.textContent = JSON.stringify({text: document.body.innerText,
    headings: [...document.querySelectorAll("h2")].map(h => h.id),
    images: [...document.images].map(i => [i.alt, i.naturalWidth, i.naturalHeight])});
  document.body.appendChild(out);
});</script>"""

HISTORY = [  # an autoshrink-like trace: a snapshot per step, with the candidates it scored
    {"step": i, "move": "width", "name": f"layer{i}", "value": 64 - 8 * i, "accuracy": 0.9 - 0.02 * i,
     "cost": 1e8, "score": 0.5, "macs": 148_050_944 - 20_000_000 * i, "params": 1000, "fits": i == 3,
     "candidates": [{"move": "width", "name": "x", "value": 8, "accuracy": 0.85 - 0.03 * i + 0.01 * k,
                     "macs": 140_000_000 - 20_000_000 * i - 1_000_000 * k} for k in range(3)]}
    for i in range(1, 4)]


def full_report() -> dict:
    """The HTML tests' report with every part a run can have, and five warnings (accuracy drop, two
    validation sizes, layers left fixed, measured with another runtime than the target's)."""
    report = copy.deepcopy(make_report())
    report["compressed"]["accuracy"] = 0.454
    report["latency"]["baseline"]["rounds"] = [1.50, 1.51, 1.52]
    report["latency"]["compressed"]["rounds"] = [0.458, 0.460, 0.462]
    report["latency"]["compressed"]["settings"]["slowest_nodes"] = [
        {"node": "/layer1/conv1/Conv", "op": "Conv", "mean_ms": 0.21, "share": 0.45}]
    report["latency"]["precision"] = {**_stats(0.31, 0.33, 0.35), "rounds": [0.30, 0.31, 0.32]}
    report["precision"] = {"precision": "int8", "images": 359, "fp32_accuracy": 0.454, "accuracy": 0.45,
                           "agreement": 0.97, "file": "model.int8.onnx", "recipe": "int8 QDQ per channel",
                           "calibration_images": 256,
                           "sensitive_layers": [{"layer": "layer1.0.conv1", "accuracy_with_layer_fp32": 0.452}]}
    report["training"] = {"teacher": [{"epoch": 1, "loss": 1.5, "train_acc": 0.6, "val_acc": 0.7, "lr": 0.05,
                                       "seconds": 10.0},
                                      {"epoch": 2, "loss": 0.5, "train_acc": 0.9, "val_acc": 0.91, "lr": 0.0,
                                       "seconds": 9.0}],
                          "fine-tune": [{"epoch": 1, "loss": 0.9, "train_acc": 0.4, "val_acc": 0.454, "lr": 0.01,
                                         "seconds": 5.0}]}
    report["reproduce"] = {"command": "compress run --model resnet18 --budget-macs 20M --epochs 1",
                           "versions": {"compressor": "0.1.0", "torch": "2.4.0"}}
    report["settings"] = {"warn_accuracy_drop": 1.0, "seed": 0}
    report["budget"] = {"macs": 20_000_000, "params": None, "latency_ms": None}
    return report


def rendered(tmp_path, report: dict, history=None) -> dict:
    write_reports(tmp_path, report, history=history)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page  # the page itself runs nothing
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                           "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, "the page did not finish loading in Chromium: " + done.stdout[-500:]
    import html

    return json.loads(html.unescape(found.group(1)))


def test_every_section_renders_with_its_figures(tmp_path):
    seen = rendered(tmp_path, full_report(), HISTORY)
    assert seen["headings"] == ["warnings", "summary", "tradeoff", "latency", "precision", "training", "search",
                                "architecture", "slowest", "target", "measurement", "onnx", "fixed", "notes",
                                "timings", "reproduce"]
    text = seen["text"]
    for expected in (
        "Warnings (5)", "accuracy_drop: accuracy fell 46.0 points, from 91.4% to 45.4%",
        "validation_size: 359 validation images cannot resolve a 1-point difference between the fp32 and int8",
        "fixed_layers: layers left at their full width: fc",
        "not_measured: latency was measured with onnxruntime-cpu, not tensorrt",
        # standard errors of 359 images: sqrt(.9137 * .0863 / 359) = 1.48 and sqrt(.454 * .546 / 359) = 2.63 points
        "91.4% ± 1.5 (n=359)", "45% ± 3 (n=359)", "-46 ± 3 points", "0 ± 4 points vs fp32",
        # per-round ratios 1.50 / .458 = 3.275, 1.51 / .460 = 3.283, 1.52 / .462 = 3.290
        "1.509 ms (rounds 1.500-1.520)", "speed-up 3.277x (3.275-3.290)",
        "int8 model latency p50", "int8 model accuracy (model.int8.onnx)", "layer1.0.conv1",
        "Training and fine-tuning curves", "teacher:", "fine-tune:", "91.00%",
        "greedy: 3 steps recorded in search.json", "9 candidates scored",
        "Kept channels per layer group (model order)", "/layer1/conv1/Conv", "share of node time", "45.0%",
        "rounds (p50 of each, ms)", "providers: CPUExecutionProvider",
        "compress run --model resnet18 --budget-macs 20M --epochs 1", "torch", "2.4.0",
    ):
        assert expected in text, expected
    assert '{"providers"' not in text  # settings as words, not raw JSON
    alts = [alt for alt, _, _ in seen["images"]]
    assert alts == ["accuracy against MACs: original, compressed and the search's points",
                    "accuracy against measured latency", "latency p50 with p90 and p99, original vs compressed",
                    "loss and accuracy per epoch", "the search's figures per step", "kept channels per group"]
    assert all(w > 100 and h > 100 for _, w, h in seen["images"])  # every plot decoded to a picture


def test_a_clean_run_says_so_and_leaves_out_what_it_lacks(tmp_path):
    report = make_report()
    report["fixed_layers"] = []
    report["data"]["val"] = 1_000_000
    report["budget"] = {"macs": 20_000_000, "params": None, "latency_ms": None}
    report["target"]["runtimes"] = ["onnxruntime-cpu"]
    report["baseline"]["accuracy"] = report["compressed"]["accuracy"]
    assert RunReport.from_dict(report)  # a valid report
    seen = rendered(tmp_path, report)
    assert "No warnings: every check passed." in seen["text"]
    assert "precision" not in seen["headings"] and "training" not in seen["headings"]
    assert "search" not in seen["headings"] and "reproduce" not in seen["headings"]

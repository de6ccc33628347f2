"""The ONNX file describes itself: what deliver.export writes as metadata (input shape, class names,
preprocessing, precision) comes back through `compress bench`'s JSON, and a low-precision copy says
its own precision."""
from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from compressor.cli import main
from exporters.bench import format_bench
from exporters.onnx_eval import add_metadata, copy_metadata, deployment_info

PREPROCESS = {"resize": 36, "crop": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
              "at_input_size": {"size": 32, "steps": "resize to 36, center crop 32"}}
ENTRIES = {"input_shape": [3, 16, 16], "class_names": ["cat", "dog", "ship"], "preprocess": PREPROCESS,
           "precision": "fp32"}


def _bench(path, out):
    result = CliRunner().invoke(main, ["bench", str(path), "--target", "cpu", "--runs", "2", "--warmup", "1",
                                       "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


def test_metadata_round_trips_through_compress_bench(onnx_file, tmp_path):
    path = tmp_path / "model.onnx"
    shutil.copy(onnx_file, path)
    add_metadata(path, ENTRIES)
    assert deployment_info(path) == ENTRIES
    result, printed = _bench(path, tmp_path / "bench.json")
    assert result["model"]["metadata"] == ENTRIES
    assert "the file says: fp32, 3 class names" in printed
    # the low-precision copy the precision stage makes: the same metadata, its own precision
    int8 = tmp_path / "model.int8.onnx"
    shutil.copy(onnx_file, int8)
    copy_metadata(path, int8, "int8")
    again, _ = _bench(int8, tmp_path / "bench8.json")
    assert again["model"]["metadata"] == {**ENTRIES, "precision": "int8"}


def test_a_file_without_metadata(onnx_file, tmp_path):
    result, _ = _bench(onnx_file, tmp_path / "bench.json")
    assert result["model"]["metadata"] == {}
    assert "the file says" not in format_bench(result)


def test_text_that_is_not_json_stays_text(onnx_file, tmp_path):
    path = tmp_path / "m.onnx"
    shutil.copy(onnx_file, path)
    add_metadata(path, {"preprocess": "sklearn digits", "class_names": ["0", "1"]})
    assert deployment_info(path) == {"preprocess": "sklearn digits", "class_names": ["0", "1"]}

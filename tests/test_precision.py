"""INT8 and FP16 ONNX for deployment (issue 13): the Q/DQ layout each recipe promises, accuracy on a
small real task (a CNN trained on the scikit-learn digits) within a point of fp32, fp32 inputs and
outputs of the FP16 file, the precision stage in a real run (file, report, headline, resume), and
bad inputs as one line."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from test_api import TinyNet, _loaders
from torch import nn

import compressor
from compress_base.errors import CompressError
from compressor.data import load_data
from exporters.onnx_eval import onnx_correct, onnx_predictions, read_metadata
from exporters.onnx_export import export_onnx
from exporters.precision import QUANTIZED_OPS, count_quantized, prepare_onnx, quantizable_nodes
from exporters.quant_noise import layer_noise, sqnr

SHAPE = (3, 16, 16)


def _digits_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A small CNN trained for a few seconds on the digits at 16x16, exported; its calibration and
    validation batches (numpy)."""
    torch.set_num_threads(1)
    data = load_data(None, resolution=16, seed=0)
    x = torch.stack([data.train[i][0] for i in range(len(data.train))])
    y = torch.tensor([data.train[i][1] for i in range(len(data.train))])
    model = _digits_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    path = export_onnx(model.eval(), SHAPE, tmp_path_factory.mktemp("digits") / "model.onnx")
    vx = torch.stack([data.val[i][0] for i in range(len(data.val))]).numpy()
    vy = np.array([data.val[i][1] for i in range(len(data.val))])
    val = [(vx[s:s + 64], vy[s:s + 64]) for s in range(0, len(vy), 64)]
    calibration = [x[i:i + 64].numpy() for i in range(0, 256, 64)]
    return path, calibration, val


def _graph(path):
    return onnx.load(str(path)).graph


def _producers(graph):
    return {out: node for node in graph.node for out in node.output}


def _consts(graph):
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


@pytest.fixture(scope="module")
def int8(digits, tmp_path_factory):
    path, calibration, _ = digits
    folder = tmp_path_factory.mktemp("int8")
    return {recipe: (folder / f"{recipe}.onnx",
                     prepare_onnx(path, folder / f"{recipe}.onnx", "int8", recipe, calibration))
            for recipe in ("tensorrt", "onnxruntime")}


@pytest.mark.parametrize("recipe, activation", [("tensorrt", TensorProto.INT8), ("onnxruntime", TensorProto.UINT8)])
def test_every_conv_and_linear_has_q_dq_on_input_and_per_channel_weight(int8, recipe, activation):
    path, info = int8[recipe]
    graph = _graph(path)
    made, consts = _producers(graph), _consts(graph)
    layers = [n for n in graph.node if n.op_type in QUANTIZED_OPS]
    assert [n.op_type for n in layers] == ["Conv", "Conv", "Gemm"] and info["quantized_nodes"] == 3
    for node in layers:
        act = made[node.input[0]]  # activation: DequantizeLinear(QuantizeLinear(x))
        assert act.op_type == "DequantizeLinear" and made[act.input[0]].op_type == "QuantizeLinear"
        assert consts[act.input[2]].dtype == onnx.helper.tensor_dtype_to_np_dtype(activation)
        weight = made[node.input[1]]
        assert weight.op_type == "DequantizeLinear"
        q, scale, zero = (consts[name] for name in weight.input)
        assert q.dtype == np.int8 and zero.dtype == np.int8 and not zero.any()  # symmetric weights
        assert q.min() >= -127  # the range TensorRT takes for int8 weights, [-127, 127]
        assert scale.shape == (q.shape[0],)  # one scale per output channel
        axis = next((a.i for a in weight.attribute if a.name == "axis"), 1)
        assert axis == 0
    if recipe == "tensorrt":  # every zero point 0, biases left in float
        zeros = [consts[n.input[2]] for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        assert zeros and all(z.dtype == np.int8 and not z.any() for z in zeros)
        assert all(consts[n.input[2]].dtype == np.float32 for n in layers)
    assert info["calibration_images"] == 256


@pytest.mark.parametrize("recipe", ["tensorrt", "onnxruntime"])
def test_int8_accuracy_is_within_a_point_of_fp32(digits, int8, recipe):
    path, _, val = digits
    fp32, labels = onnx_predictions(path, val)
    low, _ = onnx_predictions(int8[recipe][0], val)
    assert len(labels) == 359
    assert (fp32 == labels).mean() > 0.85  # a real task, learned (chance: 0.1)
    assert (fp32 == labels).mean() - (low == labels).mean() <= 0.01
    assert (low == fp32).mean() >= 0.97


def test_fp16_keeps_float32_inputs_and_outputs_and_halves_the_weights(digits, tmp_path):
    path, _, val = digits
    info = prepare_onnx(path, tmp_path / "fp16.onnx", "fp16", "tensorrt")
    graph = _graph(tmp_path / "fp16.onnx")
    assert [i.type.tensor_type.elem_type for i in (*graph.input, *graph.output)] == [TensorProto.FLOAT] * 2
    consts = {t.name: t.data_type for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(consts[n.input[1]] == TensorProto.FLOAT16 for n in convs)
    assert info["quantized_nodes"] == 0 and "fp32 inputs and outputs" in info["recipe"]
    fp32, _ = onnx_predictions(path, val)
    half, _ = onnx_predictions(tmp_path / "fp16.onnx", val)
    assert (half == fp32).mean() >= 0.99


def test_an_excluded_layer_stays_fp32(digits, tmp_path):
    path, calibration, val = digits
    names = quantizable_nodes(path)
    assert len(names) == 3
    prepare_onnx(path, tmp_path / "x.onnx", "int8", "onnxruntime", calibration, exclude=[names[0]])
    graph = _graph(tmp_path / "x.onnx")
    first = next(n for n in graph.node if n.name == names[0])
    assert first.input[1] in _consts(graph) and _consts(graph)[first.input[1]].dtype == np.float32
    assert count_quantized(tmp_path / "x.onnx") == 2
    assert onnx_correct(tmp_path / "x.onnx", val)[1] == 359


def test_sqnr_by_hand():
    assert sqnr(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(10 * np.log10(2))
    assert sqnr(np.array([3.0, 4.0]), np.array([3.0, 4.0])) == float("inf")


def test_layer_noise_ranks_every_quantized_layer(digits, int8):
    path, calibration, _ = digits
    noise = layer_noise(path, int8["tensorrt"][0], [calibration[0][:8]])
    assert set(noise) == set(quantizable_nodes(path))
    assert all(0 < v < 80 for v in noise.values())  # int8: tens of dB, never exact


def test_sensitive_layers_are_the_accuracy_of_that_layer_in_fp32(digits, int8, tmp_path):
    from compressor.stages.precision import PROBED_LAYERS, sensitive_layers

    path, calibration, val = digits
    _, labels = onnx_predictions(path, val)
    found = sensitive_layers(path, int8["tensorrt"][0], "tensorrt", calibration, lambda: iter(val), labels)
    assert len(found) == min(PROBED_LAYERS, 3)
    assert [s.accuracy_with_layer_fp32 for s in found] == sorted((s.accuracy_with_layer_fp32 for s in found),
                                                                 reverse=True)
    best = found[0]  # an independent path: quantize with that layer excluded, count the hits
    prepare_onnx(path, tmp_path / "p.onnx", "int8", "tensorrt", calibration, exclude=[best.layer])
    correct, images = onnx_correct(tmp_path / "p.onnx", val)
    assert best.accuracy_with_layer_fp32 == correct / images


@pytest.mark.parametrize("args, words", [
    (("missing.onnx", "int8", "tensorrt"), "does not exist"),
    (("model", "int4", "tensorrt"), "precision 'int4'"),
    (("model", "int8", "tflite"), "recipe 'tflite'"),
    (("model", "int8", "tensorrt"), "needs calibration images"),
    (("text", "fp16", "tensorrt"), "not a readable ONNX file"),
])
def test_bad_inputs_are_one_line(digits, tmp_path, args, words):
    path = {"model": digits[0], "text": tmp_path / "t.onnx"}.get(args[0], tmp_path / args[0])
    (tmp_path / "t.onnx").write_text("not onnx")
    with pytest.raises(CompressError) as info:
        prepare_onnx(path, tmp_path / "out.onnx", *args[1:])
    assert words in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out.onnx").exists()


def test_calibration_at_another_shape_is_one_line(digits, tmp_path):
    with pytest.raises(CompressError, match="does not fit the model's input Nx3x16x16"):
        prepare_onnx(digits[0], tmp_path / "out.onnx", "int8", "onnxruntime", [np.zeros((4, 3, 32, 32), np.float32)])


def _run(out, **settings):
    train, val = _loaders()
    torch.manual_seed(0)
    return compressor.compress(TinyNet(), train_loader=train, val_loader=val, input_shape="3x16x16", macs="50%",
                               epochs=1, teacher_epochs=0, latency_runs=2, quiet=True, out=str(out), **settings)


def test_an_int8_run_ships_model_int8_onnx_with_its_accuracy_and_resumes(tmp_path, monkeypatch):
    from compressor.stages import deliver
    from compressor.stages import precision as stage

    real = deliver.write_reports

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(deliver, "write_reports", interrupted)  # killed after the precision stage
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "r", precision="int8", calibration_images=40)
    saved = json.loads((tmp_path / "r" / ".compress" / stage.STATE_FILE).read_text())
    monkeypatch.setattr(deliver, "write_reports", real)

    def redone(*a, **kw):
        raise AssertionError("the precision stage ran again")

    monkeypatch.setattr(stage, "prepare_onnx", redone)
    res = _run(tmp_path / "r", resume=True)
    report = json.loads(res.paths["report.json"].read_text())
    got = report["precision"]
    assert got == saved["result"]
    assert got["precision"] == "int8" and got["file"] == "model.int8.onnx" and got["calibration_images"] == 40
    assert got["images"] == 32 and "u8 activations" in got["recipe"]  # the cpu profile's onnxruntime recipe
    assert "model.int8.onnx" in json.loads(res.paths["manifest.json"].read_text())["artifacts"]
    assert read_metadata(res.paths["model.int8.onnx"])["precision"] == "int8"
    _, val = _loaders()
    batches = [(x.numpy(), y.numpy()) for x, y in val]
    correct, seen = onnx_correct(res.paths["model.int8.onnx"], batches)
    fp32, _ = onnx_correct(res.paths["model.onnx"], batches)
    assert got["accuracy"] == correct / seen == report["compressed"]["accuracy"]  # the headline is what ships
    assert got["fp32_accuracy"] == fp32 / seen == report["exported_accuracy"]["compressed_onnx"]


def test_an_fp32_run_records_model_onnx_and_no_file(tmp_path):
    res = _run(tmp_path / "r")  # the cpu profile's precision
    report = json.loads(res.paths["report.json"].read_text())
    got = report["precision"]
    assert got["precision"] == "fp32" and got.get("file") is None and got["agreement"] == 1.0
    assert got["accuracy"] == got["fp32_accuracy"] == report["exported_accuracy"]["compressed_onnx"]
    assert not [p for p in res.paths if p.startswith("model.") and p.endswith(".onnx") and p != "model.onnx"]


def test_a_run_evaluated_off_the_deployment_shape_measures_precision_at_that_shape(tmp_path):
    train, val = _loaders()  # 16x16 images, a 20x20 deployment input: resized for the ONNX files
    torch.manual_seed(0)
    res = compressor.compress(TinyNet(), train_loader=train, val_loader=val, input_shape="3x20x20", macs="50%",
                              epochs=1, teacher_epochs=0, latency_runs=2, quiet=True, out=str(tmp_path / "r"),
                              precision="fp16")
    got = res.report.precision
    assert got.file == "model.fp16.onnx" and got.images == 32 and got.calibration_images is None
    with torch.no_grad():  # the headline stays PyTorch's at the images' own size (the proxy)
        assert res.report.compressed.accuracy == sum(int((res.model(x).argmax(1) == y).sum()) for x, y in val) / 32
    resized = [(torch.nn.functional.interpolate(x, size=(20, 20), mode="bilinear", antialias=True).numpy(), y.numpy())
               for x, y in val]
    assert got.accuracy == onnx_correct(res.paths["model.fp16.onnx"], resized)[0] / 32


@pytest.mark.slow
def test_a_latency_budget_holds_for_the_int8_model(tmp_path):
    """--budget-latency with --precision int8: the table is measured on Q/DQ graphs (its hardware says
    int8) and the latency check times the int8 model."""
    table = tmp_path / "lut.json"
    res = _run(tmp_path / "r", precision="int8", latency_ms=1.0, latency_table=str(table), calibration_images=32)
    (section,) = json.loads(table.read_text())["tables"]
    assert section["hardware"]["precision"] == "int8"
    assert res.report.precision.file == "model.int8.onnx"


@pytest.mark.slow
def test_a_proxy_run_measures_precision_on_the_model_at_its_evaluation_size(tmp_path):
    """The digits demo keeps a proxy (trained and evaluated at 16x16, shipped at 64x64, where it scores
    what an untrained model would): int8 is measured on the model exported and quantized at 16x16, and
    the shipped model.int8.onnx is still the 64x64 file."""
    from click.testing import CliRunner

    from compressor.cli import main

    out = tmp_path / "r"
    result = CliRunner().invoke(main, ["run", "--budget-macs", "50%", "--train-resolution", "16", "--input-shape",
                                       "3x64x64", "--teacher-epochs", "2", "--epochs", "1", "--latency-runs", "2",
                                       "--precision", "int8", "--calibration-images", "64", "-q", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    got = report["precision"]
    assert got["input_shape"] == [3, 16, 16] and got["file"] == "model.int8.onnx"
    assert abs(got["fp32_accuracy"] - report["compressed"]["accuracy"]) * got["images"] <= 1  # the run's own figure
    assert got["fp32_accuracy"] > 0.5 and got["agreement"] > 0.9  # not the chance-level 64x64 files
    assert json.loads(read_metadata(out / "model.int8.onnx")["input_shape"]) == [3, 64, 64]
    assert "model.int8.onnx, at 16x16" in result.output

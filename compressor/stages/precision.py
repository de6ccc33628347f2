"""The precision stage: the compressed model in the precision that ships (``--precision``, default the
target profile's). fp32 ships ``model.onnx`` itself; fp16 and int8 write ``model.fp16.onnx`` or
``model.int8.onnx`` from it (int8: post-training quantization calibrated on training images, with the
profile's ``quantization`` recipe), and its accuracy and its top-1 agreement with ``model.onnx`` are
measured on the validation images at the deployment shape through onnxruntime (a run evaluated at a
proxy resolution: the same conversion of the model exported at that resolution, see
:func:`_low_precision`). When low precision costs more than ``--warn-accuracy-drop`` points, the
int8 layers that recover the most accuracy when kept in fp32 are found (at most ``PROBED_LAYERS``
re-quantizations) and a warning is logged.

The shipped file's accuracy becomes the run's headline accuracy whenever accuracy is measured at
the deployment shape; a run evaluated at a proxy resolution keeps the proxy's (its report says so).
A finished stage is not redone on ``--resume`` while ``model.onnx`` is unchanged."""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from compress_base.fileio import write_json
from exporters.onnx_eval import copy_metadata, onnx_predictions
from exporters.onnx_export import export_onnx
from exporters.precision import prepare_onnx
from exporters.quant_noise import layer_noise

from ..data import DIGITS_SOURCE, load_data, make_loader
from ..manifest import sha256
from ..run_report import PrecisionResult, SensitiveLayer
from ..run_state import RunState
from .prepare import _logs_once, weights_preprocess

log = logging.getLogger(__name__)

STATE_FILE = "precision.json"  # in .compress/: the finished stage's result, for --resume
PROBED_LAYERS = 4  # int8 layers re-quantized one at a time in fp32 when accuracy drops: the noisiest by SQNR
NOISE_IMAGES = 16  # calibration images that rank the layers by quantization noise

Batches = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]  # a fresh pass over (images, labels)


def precision(state: RunState) -> None:
    """Fill ``state.precision`` (and ship ``model.<precision>.onnx`` for fp16 and int8)."""
    chosen = state.config.precision or state.profile.precision
    if _restore(state, chosen):
        return
    out, exported, res = state.out, state.exported_accuracy, state.resolutions
    proxy = res is not None and not res.at_deployment
    if chosen == "fp32" and exported is not None:  # model.onnx at the deployment shape: measured already
        result = PrecisionResult(precision="fp32", images=exported.images, fp32_accuracy=exported.compressed_onnx,
                                 accuracy=exported.compressed_onnx, agreement=1.0)
    elif chosen == "fp32" and proxy:  # nothing is converted: the run's own (proxy) accuracy
        result = PrecisionResult(precision="fp32", images=len(state.eval_data.val), fp32_accuracy=state.accuracy,
                                 accuracy=state.accuracy, agreement=1.0, input_shape=_proxy_shape(state))
    elif chosen == "fp32":
        train, val, resize = _deployment_data(state)
        reference, labels = onnx_predictions(out / "model.onnx", _batches(state, val, resize)())
        fp32 = float(np.mean(reference == labels))
        result = PrecisionResult(precision="fp32", images=len(labels), fp32_accuracy=fp32, accuracy=fp32,
                                 agreement=1.0)
    else:
        result = _low_precision(state, chosen, proxy)
    state.precision = result
    if res is not None and res.at_deployment:
        state.accuracy = result.accuracy  # the headline is what ships
    _save(state)


def _proxy_shape(state: RunState) -> list[int]:
    return [state.shape[0], state.resolutions.evaluation, state.resolutions.evaluation]


def _low_precision(state: RunState, chosen: str, proxy: bool) -> PrecisionResult:
    """Write ``model.<chosen>.onnx`` from ``model.onnx`` (int8: calibrated at the deployment shape) and
    measure it against fp32. A ``proxy`` run (evaluated below the deployment shape, where the shipped
    files score what an untrained model would) measures the same conversion of the compressed model
    exported at its evaluation size instead, on its own validation images."""
    out, recipe = state.out, state.profile.quantization
    name = f"model.{chosen}.onnx"
    train, val, resize = _deployment_data(state)
    calibration = _calibration(state, train, resize) if chosen == "int8" else None
    info = prepare_onnx(out / "model.onnx", out / name, chosen, recipe, calibration)
    log.info("wrote %s: %s%s", name, info["recipe"], f"; {info['quantized_nodes']} layers quantized on "
             f"{info['calibration_images']} training images" if chosen == "int8" else "")
    copy_metadata(out / "model.onnx", out / name, chosen)
    state.artifacts.append(name)
    result = dict(precision=chosen, file=name, recipe=info["recipe"],
                  calibration_images=info["calibration_images"] or None)
    if not proxy:
        return PrecisionResult(**result, **_compare(state, out / "model.onnx", out / name, chosen, calibration,
                                                    _batches(state, val, resize)))
    shape = _proxy_shape(state)
    data = state.eval_data
    train = _unaugmented(data.train, data, shape[1])
    calibration = _calibration(state, train, None) if chosen == "int8" else None
    with tempfile.TemporaryDirectory(prefix="compress-precision-") as tmp:
        fp32 = export_onnx(state.small, tuple(shape), Path(tmp) / "model.onnx")
        prepare_onnx(fp32, Path(tmp) / name, chosen, recipe, calibration)
        measured = _compare(state, fp32, Path(tmp) / name, chosen, calibration, _batches(state, data.val, None))
    log.info("precision: %s measured on the model exported at the %dx%d evaluation size (the run's proxy)",
             chosen, shape[1], shape[2])
    return PrecisionResult(**result, **measured, input_shape=shape)


def _compare(state: RunState, fp32: Path, low: Path, chosen: str, calibration, val_batches: Batches) -> dict:
    """Accuracy of ``fp32`` and ``low`` on the validation images, their top-1 agreement, and (when
    ``low`` loses more than ``--warn-accuracy-drop`` points in int8) the layers that cost most."""
    config = state.config
    reference, labels = onnx_predictions(fp32, val_batches())
    predicted, _ = onnx_predictions(low, val_batches())
    fp32_acc, accuracy = float(np.mean(reference == labels)), float(np.mean(predicted == labels))
    sensitive = []
    drop = 100 * (fp32_acc - accuracy)
    if drop > config.warn_accuracy_drop:
        if chosen == "int8":
            sensitive = sensitive_layers(fp32, low, state.profile.quantization, calibration, val_batches, labels)
        helps = f"; kept in fp32, {sensitive[0].layer} alone gives {100 * sensitive[0].accuracy_with_layer_fp32:.2f}%" \
            if sensitive else ""
        log.warning("%s scores %.2f%% against fp32's %.2f%% on %d validation images: %.2f points lost, over "
                    "--warn-accuracy-drop %g%s", low.name, 100 * accuracy, 100 * fp32_acc, len(labels), drop,
                    config.warn_accuracy_drop, helps)
    return dict(images=len(labels), fp32_accuracy=fp32_acc, accuracy=accuracy,
                agreement=float(np.mean(predicted == reference)), sensitive_layers=sensitive)


def sensitive_layers(src: Path, quantized: Path, recipe: str, calibration: list[np.ndarray],
                     val_batches: Batches, labels: np.ndarray) -> list[SensitiveLayer]:
    """The ``PROBED_LAYERS`` layers of ``quantized`` with the lowest SQNR (:mod:`exporters.quant_noise`),
    each re-quantized alone in fp32 and scored on the validation images; best recovery first."""
    noise = layer_noise(src, quantized, _first_images(calibration, NOISE_IMAGES))
    found = []
    with tempfile.TemporaryDirectory(prefix="compress-probe-") as tmp:
        for layer in sorted(noise, key=noise.get)[:PROBED_LAYERS]:
            prepare_onnx(src, Path(tmp) / "probe.onnx", "int8", recipe, calibration, exclude=[layer])
            predicted, _ = onnx_predictions(Path(tmp) / "probe.onnx", val_batches())
            found.append(SensitiveLayer(layer, float(np.mean(predicted == labels))))
    return sorted(found, key=lambda s: -s.accuracy_with_layer_fp32)


def _deployment_data(state: RunState) -> tuple[Dataset, Dataset, tuple[int, int] | None]:
    """Training (unaugmented) and validation images at the deployment shape: the run's own when it
    evaluates there; else the same data loaded again at that size (a square shape, data from a file
    or the digits), or as a last resort the evaluation images resized to it (``resize``: (H, W))."""
    data, res = state.eval_data, state.resolutions
    _, height, width = state.shape
    if res is not None and res.at_deployment:
        return _unaugmented(data.train, data, height), data.val, None
    config = state.config
    if height == width and (config.data is not None or data.source == DIGITS_SOURCE):
        with _logs_once("compressor.data"):  # the same files: their warnings were logged by the data stage
            again = load_data(config.data, resolution=height, seed=state.runtime.seed,
                              preprocess=weights_preprocess(config.model, config.weights))
        return _unaugmented(again.train, again, height), again.val, None
    return data.train, data.val, (height, width)


def _unaugmented(train: Dataset, data, side: int) -> Dataset:
    """``train`` with the evaluation transform instead of the random augmentation, where it has one."""
    base = getattr(train, "dataset", None)
    if data.preprocess is None or not hasattr(base, "transform"):
        return train  # tensors (the digits, a caller's DataLoader): nothing random to remove
    twin = copy.copy(base)
    twin.transform = data.preprocess.eval_transform(side)
    return Subset(twin, train.indices)


def _batches(state: RunState, dataset: Dataset, resize: tuple[int, int] | None) -> Batches:
    loader = make_loader(dataset, state.config.batch_size, shuffle=False, seed=state.runtime.seed)

    def passes():
        for images, labels in loader:
            if resize is not None:
                images = F.interpolate(images.float(), size=resize, mode="bilinear", align_corners=False,
                                       antialias=True)
            yield images.numpy(), labels.numpy()
    return passes


def _calibration(state: RunState, train: Dataset, resize) -> list[np.ndarray]:
    """The first ``calibration_images`` training images in a seeded random order (classes mixed)."""
    count = min(state.config.calibration_images, len(train))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(state.runtime.seed))[:count]
    return [images for images, _ in _batches(state, Subset(train, order.tolist()), resize)()]


def _first_images(batches: list[np.ndarray], count: int) -> list[np.ndarray]:
    kept, left = [], count
    for batch in batches:
        if left <= 0:
            break
        kept.append(batch[:left])
        left -= len(kept[-1])
    return kept


def _save(state: RunState) -> None:
    result = state.precision
    write_json(state.state_dir / STATE_FILE, {
        "result": dataclasses.asdict(result), "model_sha256": sha256(state.out / "model.onnx"),
        "file_sha256": sha256(state.out / result.file) if result.file else None})


def _restore(state: RunState, chosen: str) -> bool:
    """Take the result a killed run saved, if it is for this ``model.onnx`` and its file is intact."""
    path = state.state_dir / STATE_FILE
    if not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        result = PrecisionResult.from_dict(saved["result"])
        intact = result.precision == chosen and saved["model_sha256"] == sha256(state.out / "model.onnx") and (
            result.file is None or ((state.out / result.file).is_file()
                                    and saved["file_sha256"] == sha256(state.out / result.file)))
    except (OSError, ValueError, KeyError, TypeError):
        intact = False
    if not intact:
        log.info("precision: the saved result does not match this model.onnx; measuring again")
        return False
    state.precision = result
    if result.file:
        state.artifacts.append(result.file)
    if state.resolutions is not None and state.resolutions.at_deployment:
        state.accuracy = result.accuracy
    log.info("precision: resumed with the %s result measured before", chosen)
    return True

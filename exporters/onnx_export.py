"""ONNX export of a PyTorch classifier and its parity check against PyTorch.

Export uses PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``).
On torchvision CNNs (resnet18, mobilenet_v3_small, efficientnet_b0, convnext_tiny, densenet121,
googlenet) it exports every model in 0.2-1.1 s and honours opset 17, while the torch.export-based
exporter takes 4-13 s per model and cannot write an opset below 18. Both give the same numbers.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from compress_base.errors import CompressError, first_line
from compress_base.fileio import write_atomic
from exporters.inputs import sample_input

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MIN_OPSET = 17
MAX_OPSET = 20  # the highest opset PyTorch's TorchScript-based exporter supports
_MAX_FILE_BYTES = 2**31  # protobuf's limit on one self-contained ONNX file


def random_input(input_shape: Sequence[int], batch: int = 1, seed: int = 0) -> torch.Tensor:
    """:func:`exporters.inputs.sample_input` as a tensor: ``(batch, *input_shape)``, seeded normal, float32."""
    return torch.from_numpy(sample_input(input_shape, batch, seed))


def export_onnx(
    model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike, opset: int = 17
) -> Path:
    """Export a CPU ``model`` in eval mode to a self-contained ONNX file at ``path``.

    The graph has one input ``"input"`` and one output ``"logits"``, both with a dynamic batch
    axis. The file is written under a temporary name and renamed, so a failed export leaves
    nothing behind. The model's train/eval mode is restored afterwards.
    """
    name = type(model).__name__
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise CompressError(f"ONNX opset {opset} is not supported: choose {MIN_OPSET} to {MAX_OPSET}")
    tensors = list(itertools.chain(model.parameters(), model.buffers()))
    devices = {t.device.type for t in tensors}
    if devices - {"cpu"}:
        raise CompressError(
            f"{name} has tensors on {sorted(devices)}; call model.cpu() before exporting"
        )
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    if nbytes >= _MAX_FILE_BYTES:
        raise CompressError(
            f"{name} holds {nbytes / 2**30:.1f} GiB of weights, over the 2 GiB limit of one ONNX "
            "file; compress it further before exporting"
        )
    x = random_input(input_shape)
    buffer = io.BytesIO()  # exported in memory: an export failure and a write failure are told apart
    with _eval_mode(model):
        _check_forward(model, x)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.onnx.export(
                    model,
                    (x,),
                    buffer,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    opset_version=opset,
                    dynamo=False,
                )
        except Exception as exc:
            raise CompressError(
                f"cannot export {name} to ONNX: {first_line(exc)}; replace that operation in the "
                "model's forward with one ONNX supports"
            ) from exc
    payload = buffer.getbuffer()
    write_atomic(path, lambda tmp: tmp.write_bytes(payload))  # OSError (a full disk) is the caller's
    for w in caught:
        # The TorchScript exporter is deprecated upstream; that warning is expected, not news.
        if not issubclass(w.category, DeprecationWarning):
            log.warning("ONNX export of %s: %s", name, w.message)
    log.info("exported %s to %s (opset %d)", name, path, opset)
    return Path(path)


def verify_onnx(
    model: nn.Module, path: str | os.PathLike, input_shape: Sequence[int], batch: int = 2, seed: int = 0
) -> dict:
    """Check the ONNX file and compare onnxruntime (CPU) with PyTorch on one random batch.

    A batch other than the export's batch of 1 proves the batch axis is really dynamic.
    Returns ``{"max_abs_diff", "opset", "checker", "batch"}``.
    """
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"ONNX file {path} does not exist; export the model first")
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise CompressError(
            f"{path} fails the ONNX checker: {first_line(exc)}; re-export the model"
        ) from exc
    proto = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))

    x = random_input(input_shape, batch, seed)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors reach the caller as exceptions, not as log lines
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    try:
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    except Exception as exc:
        raise CompressError(
            f"onnxruntime fails on {path.name} at batch {batch}: {first_line(exc)}; the model's "
            "forward may fix the batch size (use x.flatten(1), not x.view(1, -1))"
        ) from exc
    with _eval_mode(model), torch.inference_mode():
        want = model(x).numpy()
    if got.shape != want.shape:
        raise CompressError(
            f"ONNX output shape {got.shape} differs from PyTorch's {want.shape} at batch {batch}; "
            "the model's forward may fix the batch size (use x.flatten(1), not x.view(1, -1))"
        )
    diff = float(np.max(np.abs(got.astype(np.float64) - want)))
    log.info("verified %s: max |onnx - torch| = %.3g at batch %d", path.name, diff, batch)
    return {"max_abs_diff": diff, "opset": opset, "checker": "passed", "batch": batch}


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_forward(model: nn.Module, x: torch.Tensor) -> None:
    name = type(model).__name__
    try:
        with torch.inference_mode():
            out = model(x)
    except Exception as exc:
        raise CompressError(
            f"{name} fails on an input of shape {tuple(x.shape)}: {first_line(exc)}; "
            "check the input shape matches the model"
        ) from exc
    if not isinstance(out, torch.Tensor):
        raise CompressError(
            f"{name}.forward returns {type(out).__name__}, not one tensor; wrap the model so "
            "forward returns only the logits"
        )

"""Accuracy of an exported ONNX classifier through onnxruntime (CPU), and the metadata a deployer
reads from the file. Needs no PyTorch: batches are numpy arrays."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from compress_base.fileio import write_atomic


def onnx_correct(path: str | Path, batches: Iterable[tuple[np.ndarray, np.ndarray]],
                 threads: int = 0) -> tuple[int, int]:
    """Top-1 hits and images of the ONNX classifier at ``path`` over ``(images NCHW float32, labels)``
    batches; onnxruntime on the CPU with ``threads`` intra-op threads (0: its default)."""
    predicted, labels = onnx_predictions(path, batches, threads)
    return int((predicted == labels).sum()), len(labels)


def onnx_predictions(path: str | Path, batches: Iterable[tuple[np.ndarray, np.ndarray]],
                     threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The top-1 classes the ONNX classifier at ``path`` predicts over ``(images, labels)`` batches, and
    the labels, in order (two int64 arrays); batches are streamed, only the classes are kept."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    predicted, labels = [], []
    for images, batch_labels in batches:
        logits = session.run(None, {name: np.ascontiguousarray(images, dtype=np.float32)})[0]
        predicted.append(logits.argmax(axis=1).astype(np.int64))
        labels.append(np.asarray(batch_labels, dtype=np.int64).reshape(-1))
    if not predicted:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(predicted), np.concatenate(labels)


def add_metadata(path: str | Path, entries: dict) -> None:
    """Store ``entries`` in the ONNX file's metadata (``metadata_props``; values that are not text
    are written as JSON), rewriting the file atomically."""
    model = onnx.load(str(path))
    kept = {p.key: p.value for p in model.metadata_props if p.key not in entries}
    del model.metadata_props[:]
    for key, value in {**kept, **entries}.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    payload = model.SerializeToString()
    write_atomic(path, lambda tmp: tmp.write_bytes(payload))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ONNX file's metadata entries."""
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def copy_metadata(source: str | Path, target: str | Path, precision: str) -> None:
    """Give ``target`` (e.g. ``model.int8.onnx``, made from ``source``) the metadata of ``source``
    with its own ``precision`` (fp32, fp16 or int8)."""
    add_metadata(target, {**read_metadata(source), "precision": precision})


def deployment_info(path: str | Path) -> dict:
    """The metadata a deployer reads (input shape, class names, preprocessing, precision and any
    other entries), values written as JSON decoded; text that is not JSON stays text."""
    info = {}
    for key, value in read_metadata(path).items():
        try:
            info[key] = json.loads(value)
        except ValueError:
            info[key] = value
    return info

"""MNIST-style IDX files (MNIST, Fashion-MNIST, KMNIST...) read where they lie, for
:func:`compressor.data.load_data`.

A folder is an IDX dataset when it holds ``train-images-idx3-ubyte`` (or ``.gz``); it must then
hold the other three files of the official split (``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each raw or gzipped; raw is read when both
are there). Every header is checked (magic number, unsigned-byte type, dimensions, size of the
data) before use, and a damaged file is one CompressError naming it.

Class names come from a ``classes.txt`` next to the files (one name per line, in label order);
without one they are ``"0"``, ``"1"``, ... : the folder's name is not used to guess them.
Images stay in memory as uint8 (60,000 x 28 x 28 is 47 MB) and become tensors one at a time.
"""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from compress_base.errors import CompressError

__all__ = ["CLASSES_FILE", "IdxImages", "IdxSplit", "is_idx_folder", "read_idx_split"]

TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CLASSES_FILE = "classes.txt"
_UBYTE = 0x08
_KIND = {3: "images", 1: "labels"}  # dimensions -> what the file holds


@dataclass(frozen=True)
class IdxSplit:
    """The official split of an IDX folder: uint8 images (N x H x W) and labels of each part."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]


class IdxImages(Dataset):
    """Images of one part of an IDX folder; item ``i`` is ``(transform(uint8 1 x H x W tensor), label)``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None):
        self.images, self.labels, self.transform = images, labels, transform
        self.targets = labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = torch.from_numpy(self.images[i].copy()).unsqueeze(0)  # a copy: the cached array is read-only
        return (image if self.transform is None else self.transform(image)), self.targets[i]


def is_idx_folder(root: Path) -> bool:
    """Whether ``root`` holds the training images of an IDX dataset (raw or gzipped)."""
    return any((root / name).is_file() for name in (TRAIN[0], TRAIN[0] + ".gz"))


def read_idx_split(root: Path) -> IdxSplit:
    """The four files of the official split under ``root``, checked, with the class names."""
    train_images, train_labels = _read_pair(root, *TRAIN)
    test_images, test_labels = _read_pair(root, *TEST)
    if train_images.shape[1:] != test_images.shape[1:]:
        raise CompressError(
            f"IDX images under {root} differ in size: train {_hw(train_images)}, test {_hw(test_images)}; "
            "use the files of one dataset"
        )
    names = _class_names(root, int(max(train_labels.max(), test_labels.max())) + 1)
    counts = np.bincount(train_labels, minlength=len(names))
    if len(names) < 2 or not counts.all():
        missing = [names[i] for i in np.flatnonzero(counts == 0)]
        raise CompressError(
            f"IDX training labels under {root} " + (f"hold no image of class {missing[0]!r}" if missing else
                                                      "hold a single class")
            + ": a classifier needs at least two classes, each with training images"
        )
    return IdxSplit(train_images, train_labels, test_images, test_labels, names)


def _read_pair(root: Path, images_name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = _find(root, images_name), _find(root, labels_name)
    images, labels = _read(images_path, 3), _read(labels_path, 1)
    if len(images) != len(labels):
        raise CompressError(
            f"IDX files do not match: {labels_path} holds {len(labels)} labels but {images_path} holds "
            f"{len(images)} images; use the two files of one dataset"
        )
    return images, labels


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / (name + ".gz")):
        if candidate.is_file():
            return candidate
    raise CompressError(
        f"IDX file {root / name}(.gz) is missing: an IDX folder needs train-images, train-labels, "
        "t10k-images and t10k-labels (raw or .gz)"
    )


def _read(path: Path, dims: int) -> np.ndarray:
    """The checked array of the IDX file at ``path`` (``dims`` dimensions, unsigned bytes)."""
    stat = path.stat()
    return _read_cached(str(path), dims, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)  # a run loads the data at two resolutions: read and check the files once
def _read_cached(path: str, dims: int, size: int, mtime_ns: int) -> np.ndarray:
    data = _bytes(path)
    kind = _KIND[dims]
    if len(data) < 4:
        raise CompressError(
            f"IDX file {path} is {len(data)} bytes, too short for a header: the file is damaged; replace it"
        )
    magic = int.from_bytes(data[:4], "big")
    if data[0] or data[1] or data[2] != _UBYTE or data[3] != dims:
        raise CompressError(
            f"IDX file {path} has magic number 0x{magic:08x}, not 0x{(_UBYTE << 8) | dims:08x} "
            f"({kind}: unsigned bytes, {dims} dimension{'s' if dims > 1 else ''}): "
            "the file is damaged or of another kind; check the file names"
        )
    header = 4 + 4 * dims
    if len(data) < header:
        raise CompressError(
            f"IDX file {path} ends inside its header ({len(data)} bytes): the file is truncated; replace it"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    if 0 in shape:
        raise CompressError(f"IDX file {path} declares {' x '.join(map(str, shape))} {kind}: it holds no data")
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        declared = " x ".join(map(str, shape)) + (f" = {expected}" if dims > 1 else "")
        raise CompressError(
            f"IDX file {path} holds {len(data) - header} bytes of {kind} but its header declares "
            f"{declared}: the file is truncated or damaged; replace it"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
    array.flags.writeable = False
    return array


def _bytes(path: str) -> bytes:
    """The content of ``path``, gunzipped if it ends in ``.gz``."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise CompressError(
            f"IDX file {path} cannot be decompressed ({type(exc).__name__}: {exc}): the file is damaged; replace it"
        ) from exc
    except OSError as exc:
        raise CompressError(f"cannot read IDX file {path} ({exc.strerror or exc}): check its permissions") from exc


def _class_names(root: Path, n_labels: int) -> list[str]:
    """Names from ``root/classes.txt`` (one per non-empty line), else ``"0"`` ... ``str(n_labels - 1)``."""
    path = root / CLASSES_FILE
    if not path.is_file():
        return [str(i) for i in range(n_labels)]
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise CompressError(f"cannot read {path} ({exc}): write one class name per line in UTF-8") from exc
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise CompressError(f"{path} lists class {twice!r} twice: write each class name once, in label order")
    if len(names) < n_labels:
        raise CompressError(
            f"{path} lists {len(names)} class names but the labels run 0-{n_labels - 1}: "
            f"write {n_labels} names, one per line, in label order"
        )
    return names


def _hw(images: np.ndarray) -> str:
    return "x".join(map(str, images.shape[1:]))


"""Tests of MNIST-style IDX folders: generated files (raw and gzipped) read back exactly, the
official split, every header check, class names, and the real Fashion-MNIST files where installed."""
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from compress_base.errors import CompressError
from compressor.data import load_data
from compressor.preprocess import Preprocess

FASHION = Path("/usr/share/datasets/fashion-mnist")
IDENTITY = Preprocess(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), source="test")


def _write_idx(path: Path, array: np.ndarray, magic: int | None = None, cut: int = 0, extra: bytes = b""):
    """``array`` (uint8) as an IDX file; gzipped when ``path`` ends in .gz."""
    magic = (0x08 << 8) | array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes() + extra
    data = data[: len(data) - cut]
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def _dataset(root: Path, n_train=30, n_test=15, size=(6, 6), classes=3, gz_train=True, gz_test=False, seed=0):
    """An IDX folder of random images; returns its four arrays."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, n, gz in (("train", n_train, gz_train), ("t10k", n_test, gz_test)):
        images = rng.integers(0, 256, (n, *size), dtype=np.uint8)
        labels = (np.arange(n) % classes).astype(np.uint8)
        ext = ".gz" if gz else ""
        _write_idx(root / f"{part}-images-idx3-ubyte{ext}", images)
        _write_idx(root / f"{part}-labels-idx1-ubyte{ext}", labels)
        arrays[part] = (images, labels)
    return arrays


def test_round_trip_with_the_official_split(tmp_path):
    arrays = _dataset(tmp_path)
    bundle = load_data(tmp_path, resolution=6, val_fraction=0.5, seed=7, preprocess=IDENTITY)
    assert len(bundle.train) == 30 and len(bundle.val) == 15  # the files' split, not val_fraction
    assert bundle.class_names == ["0", "1", "2"] and bundle.num_classes == 3
    assert "IDX" in bundle.source and bundle.warnings == []
    for subset, part in ((bundle.train, "train"), (bundle.val, "t10k")):
        images, labels = arrays[part]
        assert subset.dataset.images.dtype == np.uint8 and subset.dataset.images.shape == images.shape
        assert [subset[i][1] for i in range(len(subset))] == labels.tolist()
    x, _ = bundle.val[4]
    assert x.shape == (3, 6, 6) and x.dtype == torch.float32
    expected = torch.from_numpy(arrays["t10k"][0][4].astype(np.float32) / 255)
    for channel in x:  # grey replicated to RGB, pixel / 255 with mean 0 and std 1
        assert torch.allclose(channel, expected, atol=1e-6)


def test_idx_images_are_resized_normalised_and_lightly_augmented(tmp_path):
    _dataset(tmp_path, size=(5, 7))
    bundle = load_data(tmp_path, resolution=16)
    assert bundle.preprocess.augment == "light" and bundle.preprocess.mean == Preprocess.default().mean
    assert bundle.train[0][0].shape == bundle.val[0][0].shape == (3, 16, 16)
    assert torch.equal(bundle.val[0][0], bundle.val[0][0])
    torch.manual_seed(0)
    shots = [bundle.train[0][0] for _ in range(8)]
    assert any(not torch.equal(shots[0], s) for s in shots)  # random crops
    weights = Preprocess(resize=20, crop=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                         interpolation="bicubic", source="weights")
    bundle = load_data(tmp_path, resolution=16, preprocess=weights)
    assert bundle.preprocess.augment == "light" and bundle.preprocess.resize == 20  # a flip would change a digit
    assert bundle.preprocess.interpolation == "bicubic" and bundle.preprocess.mean == (0.5, 0.5, 0.5)


def test_raw_and_gzipped_files_read_alike(tmp_path):
    _dataset(tmp_path / "gz", gz_train=True, gz_test=True)
    _dataset(tmp_path / "raw", gz_train=False, gz_test=False)
    a = load_data(tmp_path / "gz", resolution=6, preprocess=IDENTITY)
    b = load_data(tmp_path / "raw", resolution=6, preprocess=IDENTITY)
    assert np.array_equal(a.train.dataset.images, b.train.dataset.images)
    assert torch.equal(a.val[3][0], b.val[3][0])


def test_loading_twice_reads_the_files_once(tmp_path, monkeypatch):
    from compressor import idx

    _dataset(tmp_path)
    first = load_data(tmp_path, resolution=8)
    reads = []
    monkeypatch.setattr(idx, "_bytes", lambda path: reads.append(path))
    second = load_data(tmp_path, resolution=16)
    assert reads == [] and second.train.dataset.images is first.train.dataset.images
    assert second.train.indices == first.train.indices


def test_class_names_from_classes_txt(tmp_path):
    _dataset(tmp_path)
    (tmp_path / "classes.txt").write_text("T-shirt/top\nTrouser\n\nPullover\n")
    assert load_data(tmp_path, resolution=6).class_names == ["T-shirt/top", "Trouser", "Pullover"]


@pytest.mark.parametrize("text, match", [
    ("a\nb\n", r"classes.txt lists 2 class names but the labels run 0-2: write 3 names"),
    ("a\nb\na\n", r"classes.txt lists class 'a' twice"),
    ("a\nb\nc\nd\n", r"hold no image of class 'd'"),
])
def test_bad_classes_txt(tmp_path, text, match):
    _dataset(tmp_path)
    (tmp_path / "classes.txt").write_text(text)
    with pytest.raises(CompressError, match=match):
        load_data(tmp_path, resolution=6)


def _damage(root: Path, name: str, **kwargs):
    """Rewrite file ``name`` of a generated folder with ``_write_idx`` options."""
    path = next(root.glob(name + "*"))
    gz = path.suffix == ".gz"
    data = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    array = np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)
    _write_idx(path, kwargs.pop("array", array), **kwargs)
    return path


@pytest.mark.parametrize("name, kwargs, match", [
    ("train-images", {"magic": 0x00000801}, r"has magic number 0x00000801, not 0x00000803 \(images"),
    ("train-labels", {"magic": 0x00000803}, r"has magic number 0x00000803, not 0x00000801 \(labels"),
    ("t10k-images", {"magic": 0x00000D03}, r"magic number 0x00000d03"),
    ("t10k-images", {"magic": 0x12340803}, r"magic number 0x12340803"),
    ("train-images", {"cut": 1}, r"holds 1079 bytes of images but its header declares 30 x 6 x 6 = 1080: .*truncated"),
    ("t10k-labels", {"extra": b"\0"}, r"holds 16 bytes of labels but its header declares 15: the file is truncated"),
    ("train-labels", {"cut": 31}, r"ends inside its header \(7 bytes\)"),
    ("train-labels", {"cut": 36}, r"is 2 bytes, too short for a header"),
    ("train-images", {"array": np.zeros((0, 6, 6), np.uint8)}, r"declares 0 x 6 x 6 images: it holds no data"),
    ("train-labels", {"array": np.zeros(29, np.uint8)}, r"holds 29 labels but .*train-images-idx3-ubyte.gz holds 30"),
    ("t10k-images", {"array": np.zeros((15, 7, 6), np.uint8)}, r"differ in size: train 6x6, test 7x6"),
])
def test_a_damaged_header_is_one_line_naming_the_file(tmp_path, name, kwargs, match):
    _dataset(tmp_path)
    path = _damage(tmp_path, name, **kwargs)
    with pytest.raises(CompressError, match=match) as caught:
        load_data(tmp_path, resolution=6)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message or "differ in size" in message


def test_a_damaged_gzip_file_is_named(tmp_path):
    _dataset(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(CompressError, match=rf"IDX file {path} cannot be decompressed \(EOFError"):
        load_data(tmp_path, resolution=6)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(CompressError, match=rf"IDX file {path} cannot be decompressed \(BadGzipFile"):
        load_data(tmp_path, resolution=6)


def test_a_missing_companion_file_is_named(tmp_path):
    _dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(CompressError, match=r"t10k-labels-idx1-ubyte\(\.gz\) is missing"):
        load_data(tmp_path, resolution=6)


def test_a_class_without_training_images(tmp_path):
    _dataset(tmp_path)
    labels = np.zeros(30, np.uint8)
    labels[:3] = 2  # label 1 never appears
    _damage(tmp_path, "train-labels", array=labels)
    with pytest.raises(CompressError, match=r"hold no image of class '1'"):
        load_data(tmp_path, resolution=6)


def test_a_class_missing_from_the_test_files_is_warned(tmp_path):
    _dataset(tmp_path)
    _damage(tmp_path, "t10k-labels", array=(np.arange(15) % 2).astype(np.uint8))
    (warning,) = load_data(tmp_path, resolution=6).warnings
    assert warning.startswith("validation has no image of class '2' (train has 10)")
    assert warning.endswith("use t10k-* test files with more images of each class")


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_real_fashion_mnist_files():
    bundle = load_data(FASHION, resolution=28)
    assert len(bundle.train) == 60_000 and len(bundle.val) == 10_000
    assert bundle.train.dataset.images.shape == (60_000, 28, 28)
    assert bundle.train.dataset.images.nbytes == 47_040_000
    assert np.bincount(bundle.train.dataset.labels).tolist() == [6000] * 10
    assert np.bincount(bundle.val.dataset.labels).tolist() == [1000] * 10
    assert bundle.class_names == [str(i) for i in range(10)]
    x, y = bundle.val[0]
    assert x.shape == (3, 28, 28) and y == 9  # the first test image is an ankle boot

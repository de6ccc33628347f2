"""Tests of how compressor.data finds and decodes files: links, hard links, 16-bit PNGs, and the
warnings about a validation set too small to measure every class."""
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from compress_base.errors import CompressError
from compressor.data import load_data
from compressor.preprocess import IMAGENET_MEAN, IMAGENET_STD


def _write_pngs(folder, n, seed=0, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(start, start + n):
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")


def _paths(subset):
    return [subset.dataset.samples[i][0] for i in subset.indices]


def _inodes(subset):
    return [os.stat(p).st_ino for p in _paths(subset)]


@pytest.fixture
def six(tmp_path):
    """An ImageFolder tree of two classes of three images each."""
    _write_pngs(tmp_path / "data" / "a", 3, seed=1)
    _write_pngs(tmp_path / "data" / "b", 3, seed=2)
    return tmp_path / "data"


def test_a_link_loop_is_not_followed(six, caplog):
    (six / "a" / "loop").symlink_to("..")
    with caplog.at_level(logging.WARNING, logger="compressor.data"):
        bundle = load_data(six, resolution=6, val_fraction=0.4)
    assert len(bundle.train) + len(bundle.val) == 6
    assert any("1 symbolic link" in w and "loop" in w for w in bundle.warnings)
    assert any("1 symbolic link" in r.getMessage() for r in caplog.records)


def test_links_out_of_or_back_into_the_tree_are_skipped(six):
    _write_pngs(six.parent / "outside", 2, seed=3)
    (six / "a" / "out.png").symlink_to(six.parent / "outside" / "000.png")
    (six / "a" / "outdir").symlink_to(six.parent / "outside")
    (six / "a" / "again.png").symlink_to(six / "b" / "000.png")
    (six / "a" / "bs").symlink_to(six / "b")
    (six / "c").symlink_to(six.parent / "outside")  # a class folder that leaves the tree
    bundle = load_data(six, resolution=6, val_fraction=0.4)
    assert bundle.class_names == ["a", "b"]
    paths = _paths(bundle.train) + _paths(bundle.val)
    assert len(paths) == 6 and not any(os.path.islink(p) for p in paths)
    assert any("5 symbolic links" in w for w in bundle.warnings)


def test_a_hard_linked_file_is_used_once(six):
    os.link(six / "a" / "000.png", six / "a" / "twin.png")
    os.link(six / "b" / "000.png", six / "b" / "twin.png")
    for seed in range(4):
        bundle = load_data(six, resolution=6, val_fraction=0.4, seed=seed)
        train, val = _inodes(bundle.train), _inodes(bundle.val)
        assert len(train) + len(val) == 6
        assert len(set(train)) == len(train) and len(set(val)) == len(val) and not set(train) & set(val)
    assert any("2 files" in w and "hard link" in w for w in bundle.warnings)


def test_a_file_in_both_train_and_val_is_dropped_from_train(tmp_path, caplog):
    for part, seed, start in (("train", 1, 0), ("val", 3, 10)):
        _write_pngs(tmp_path / part / "a", 5, seed=seed, start=start)
        _write_pngs(tmp_path / part / "b", 5, seed=seed + 1, start=start)
    os.link(tmp_path / "val" / "a" / "010.png", tmp_path / "train" / "a" / "shared.png")
    with caplog.at_level(logging.WARNING, logger="compressor.data"):
        bundle = load_data(tmp_path, resolution=6)
    assert len(bundle.train) == 10 and len(bundle.val) == 10
    assert not set(_inodes(bundle.train)) & set(_inodes(bundle.val))
    assert "shared.png" not in "".join(_paths(bundle.train))
    (message,) = bundle.warnings
    assert "1 file" in message and "shared.png" in message and "dropped from training" in message
    assert any("shared.png" in r.getMessage() for r in caplog.records)


def test_16_bit_png_is_scaled_to_8_bits(tmp_path):
    ramp = (np.arange(6 * 6, dtype=np.uint16).reshape(6, 6) * 1800 + 300).astype(np.uint16)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.fromarray(ramp).save(tmp_path / name / f"{i}.png")
    assert Image.open(tmp_path / "a" / "0.png").mode in ("I;16", "I")
    bundle = load_data(tmp_path, resolution=6)
    x = bundle.val[0][0]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = (x * std + mean) * 255
    expected = torch.from_numpy((ramp >> 8).astype(np.float32)).expand(3, -1, -1)
    assert pixels.std() > 10
    assert torch.allclose(pixels, expected, atol=1e-3)


def test_32_bit_greyscale_outside_16_bits_keeps_its_contrast(tmp_path):
    ramp = np.arange(6 * 6, dtype=np.int32).reshape(6, 6) * 100_000 - 1_000_000
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.fromarray(ramp).save(tmp_path / name / f"{i}.tiff")
    pixels = load_data(tmp_path, resolution=6).val[0][0]
    assert len(pixels[0].unique()) == 36  # a ramp of 36 levels, not clipped to black and white


def test_a_class_missing_from_validation_is_warned(tmp_path, caplog):
    _write_pngs(tmp_path / "train" / "a", 6)
    _write_pngs(tmp_path / "train" / "b", 12)
    _write_pngs(tmp_path / "val" / "a", 5)
    with caplog.at_level(logging.WARNING, logger="compressor.data"):
        bundle = load_data(tmp_path, resolution=6)
    assert bundle.warnings == [
        f"validation has no image of class 'b' (train has 12): its accuracy is not measured; "
        f"add images to {tmp_path / 'val' / 'b'}"
    ]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == bundle.warnings


def test_classes_with_few_validation_images_are_warned(tmp_path):
    for name, n in (("a", 3), ("b", 5), ("c", 6)):
        _write_pngs(tmp_path / name, n)
    bundle = load_data(tmp_path, resolution=6, val_fraction=0.2)
    assert bundle.warnings == [
        "validation has only 1 image of classes 'a', 'b', 'c': accuracy per class is noise; "
        "use more images per class or a larger validation fraction"
    ]
    bundle = load_data(tmp_path, resolution=6, val_fraction=0.5)
    assert bundle.warnings == [
        "validation has only 2-3 images of classes 'a', 'b', 'c': accuracy per class is noise; "
        "use more images per class or a larger validation fraction"
    ]


def test_a_single_image_class_is_never_validated_and_says_so(tmp_path):
    _write_pngs(tmp_path / "a", 10)
    _write_pngs(tmp_path / "b", 1)
    bundle = load_data(tmp_path, resolution=6, val_fraction=0.5)
    assert bundle.warnings == [
        f"validation has no image of class 'b' (train has 1): its accuracy is not measured; "
        f"add images to {tmp_path / 'b'}"
    ]


def test_many_missing_classes_make_one_short_line(tmp_path):
    _write_pngs(tmp_path / "train" / "a", 5)
    _write_pngs(tmp_path / "val" / "a", 5)
    for name in "bcdefgh":
        _write_pngs(tmp_path / "train" / name, 2)
    (message,) = load_data(tmp_path, resolution=6).warnings
    assert message == (
        "validation has no image of classes 'b', 'c', 'd', 'e', 'f' and 2 more (train has 2 each): "
        f"their accuracy is not measured; add images to their folders in {tmp_path / 'val'}"
    )


def test_digits_have_no_warning():
    assert load_data(resolution=8).warnings == []


def test_an_unlistable_folder_is_one_clear_error(six, monkeypatch):
    (six / "a" / "locked").mkdir()
    scandir = os.scandir

    def refuse(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(CompressError, match=r"cannot list folder .*locked \(Permission denied\): check"):
        load_data(six, resolution=6)


def test_validation_with_few_images_says_where_to_add_them(tmp_path):
    for name in ("a", "b"):
        _write_pngs(tmp_path / "train" / name, 6)
    _write_pngs(tmp_path / "val" / "a", 5)
    _write_pngs(tmp_path / "val" / "b", 2)
    assert load_data(tmp_path, resolution=6).warnings == [
        "validation has only 2 images of class 'b': accuracy per class is noise; "
        f"add images to {tmp_path / 'val' / 'b'}"
    ]

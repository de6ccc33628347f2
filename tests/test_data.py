"""Tests of compressor.data: digits, ImageFolder trees, their errors, halves and loaders."""
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from compress_base.errors import CompressError
from compressor.data import DIGITS_SOURCE, load_data, make_loader, split_halves


@pytest.fixture(scope="module")
def digits():
    return load_data(resolution=16, val_fraction=0.2, seed=0)


def _labels(subset):
    return [int(subset.dataset.tensors[1][i]) for i in subset.indices]


def test_digits_shapes_and_metadata(digits):
    x, y = digits.train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert y.dtype == torch.long
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    assert digits.num_classes == 10
    assert digits.class_names == [str(i) for i in range(10)]
    assert digits.source == DIGITS_SOURCE
    assert digits.resolution == 16


def test_digits_default_resolution_is_32():
    assert load_data().train[0][0].shape == (3, 32, 32)


def test_digits_normalised_on_train(digits):
    x = digits.train.dataset.tensors[0][digits.train.indices]
    assert abs(x.mean().item()) < 1e-4
    assert abs(x.std().item() - 1.0) < 1e-4


def test_digits_split_sizes_disjoint_and_stratified(digits):
    train, val = set(digits.train.indices), set(digits.val.indices)
    assert not train & val
    assert train | val == set(range(1797))
    assert abs(len(val) - 0.2 * 1797) <= 10
    total = Counter(_labels(digits.train)) + Counter(_labels(digits.val))
    for cls, count in Counter(_labels(digits.val)).items():
        assert abs(count - 0.2 * total[cls]) <= 1


def test_digits_split_follows_seed(digits):
    again = load_data(resolution=16, seed=0)
    assert again.val.indices == digits.val.indices
    assert torch.equal(again.val[5][0], digits.val[5][0])
    assert load_data(resolution=16, seed=1).val.indices != digits.val.indices


@pytest.mark.parametrize("kwargs", [
    {"val_fraction": 0.0}, {"val_fraction": 1.0}, {"resolution": 0}, {"resolution": 16.0},
])
def test_bad_arguments(kwargs):
    with pytest.raises(CompressError):
        load_data(**kwargs)


def _write_pngs(folder, colour, n, seed=0, size=(20, 14)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.png")


@pytest.fixture
def tree(tmp_path):
    _write_pngs(tmp_path / "red", (220, 30, 30), 6, seed=1)
    _write_pngs(tmp_path / "blue", (30, 30, 220), 6, seed=2)
    return tmp_path


def test_folder_loads_and_splits(tree):
    bundle = load_data(tree, resolution=16, val_fraction=0.2, seed=0)
    assert bundle.class_names == ["blue", "red"] and bundle.num_classes == 2
    assert bundle.source == str(tree) and bundle.resolution == 16
    assert len(bundle.train) == 10 and len(bundle.val) == 2
    assert not set(bundle.train.indices) & set(bundle.val.indices)
    assert sorted(bundle.val.dataset.targets[i] for i in bundle.val.indices) == [0, 1]
    x, y = bundle.val[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert torch.equal(bundle.val[0][0], x)  # evaluation transform is deterministic
    red = bundle.val[1][0] if y == 0 else x
    assert red[0].mean() > 1.0 and red[2].mean() < 0.0  # ImageNet-normalised red
    assert bundle.train[0][0].shape == (3, 16, 16)
    assert load_data(tree, resolution=16, seed=0).val.indices == bundle.val.indices


def test_folder_ignores_hidden_folders_and_other_files(tree):
    _write_pngs(tree / ".ipynb_checkpoints", (0, 0, 0), 1)
    (tree / "red" / "notes.txt").write_text("not an image")
    assert load_data(tree, resolution=8).class_names == ["blue", "red"]


def test_folder_with_train_and_val_subfolders(tmp_path):
    _write_pngs(tmp_path / "train" / "a", (200, 200, 0), 4)
    _write_pngs(tmp_path / "train" / "b", (0, 200, 200), 4)
    _write_pngs(tmp_path / "val" / "b", (0, 200, 200), 3)
    bundle = load_data(tmp_path, resolution=8)
    assert bundle.class_names == ["a", "b"]
    assert len(bundle.train) == 8 and len(bundle.val) == 3
    assert {bundle.val[i][1] for i in range(3)} == {1}  # labels follow the train classes


def test_val_class_missing_from_train(tmp_path):
    _write_pngs(tmp_path / "train" / "a", (200, 200, 0), 2)
    _write_pngs(tmp_path / "train" / "b", (0, 200, 200), 2)
    _write_pngs(tmp_path / "val" / "c", (0, 0, 0), 1)
    with pytest.raises(CompressError, match="c"):
        load_data(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(CompressError, match="does not exist"):
        load_data(tmp_path / "nowhere")


def test_path_is_a_file(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CompressError, match="not a folder"):
        load_data(tmp_path / "file.txt")


def test_empty_folder(tmp_path):
    with pytest.raises(CompressError, match="no class subfolders"):
        load_data(tmp_path)


def test_class_folders_without_images(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "readme.txt").write_text("x")
    with pytest.raises(CompressError, match="no images"):
        load_data(tmp_path)


def test_one_empty_class_folder(tree):
    (tree / "green").mkdir()
    with pytest.raises(CompressError, match="green"):
        load_data(tree)


def test_single_class(tmp_path):
    _write_pngs(tmp_path / "only", (10, 10, 10), 3)
    with pytest.raises(CompressError, match="single class"):
        load_data(tmp_path)


def _item_of(bundle, name):
    """(subset, position) of the file called ``name`` in the bundle."""
    for subset in (bundle.train, bundle.val):
        for position, i in enumerate(subset.indices):
            if subset.dataset.samples[i][0].endswith(name):
                return subset, position
    raise AssertionError(name)


@pytest.mark.parametrize("name, damage", [
    ("bad.png", lambda good: b"this is not a png"),
    ("cut.png", lambda good: good[: len(good) // 2]),
    ("empty.png", lambda good: b""),
])
def test_a_damaged_image_is_named_in_one_line_when_read(tree, name, damage):
    (tree / "blue" / name).write_bytes(damage((tree / "blue" / "000.png").read_bytes()))
    bundle = load_data(tree, resolution=8)  # no pre-pass: loading succeeds
    subset, position = _item_of(bundle, name)
    with pytest.raises(CompressError) as caught:
        subset[position]
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"image file {tree / 'blue' / name} cannot be read (")
    assert message.endswith("): remove or replace it")


def test_load_data_opens_no_image(tree, monkeypatch):
    import PIL.Image

    opened = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    bundle = load_data(tree, resolution=8)
    assert opened == []
    bundle.val[0]
    assert len(opened) == 1


def test_a_damaged_image_met_in_a_worker_is_one_error_line(tree, capsys):
    from compressor.cli_support import fail

    (tree / "red" / "bad.png").write_bytes(b"this is not a png")
    bundle = load_data(tree, resolution=8, val_fraction=0.2)
    loader = make_loader(torch.utils.data.ConcatDataset([bundle.train, bundle.val]), 4, False, 0, workers=2)
    with pytest.raises(CompressError) as caught:
        list(loader)
    assert type(caught.value).__name__ == "UnreadableImage"
    message = str(caught.value)
    assert message.startswith(f"image file {tree / 'red' / 'bad.png'} cannot be read (UnidentifiedImageError: ")
    assert "\n" not in message and "DataLoader worker" not in message
    with pytest.raises(SystemExit) as exited:
        fail(caught.value)  # what the CLI prints
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_folder_records_its_preprocessing(tree):
    from compressor.preprocess import Preprocess

    assert load_data(tree, resolution=8).preprocess == Preprocess.default()
    assert load_data(resolution=8).preprocess is None  # the digits demo
    mine = Preprocess(resize=10, crop=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), source="test")
    bundle = load_data(tree, resolution=16, preprocess=mine)
    assert bundle.preprocess is mine
    path = bundle.val.dataset.samples[bundle.val.indices[0]][0]
    expected = mine.eval_transform(16)(Image.open(path).convert("RGB"))
    assert torch.equal(bundle.val[0][0], expected)


def test_split_halves_disjoint_and_covering(digits):
    a, b = split_halves(digits.train, seed=3)
    assert not set(a.indices) & set(b.indices)
    assert sorted(a.indices + b.indices) == list(range(len(digits.train)))
    assert abs(len(a) - len(b)) <= 1
    assert split_halves(digits.train, seed=3)[0].indices == a.indices
    assert split_halves(digits.train, seed=4)[0].indices != a.indices
    with pytest.raises(CompressError):
        split_halves(torch.utils.data.TensorDataset(torch.zeros(1)), seed=0)


def test_make_loader_order_follows_seed(digits):
    def first_labels(seed):
        return [y.tolist() for _, y in make_loader(digits.train, 50, True, seed)][:3]

    assert first_labels(7) == first_labels(7)
    assert first_labels(7) != first_labels(8)
    batches = list(make_loader(digits.val, 100, False, 0))
    assert [len(y) for _, y in batches] == [100, 100, 100, len(digits.val) - 300]
    assert batches[0][0].shape == (100, 3, 16, 16)


def test_make_loader_drops_a_lone_last_sample_when_shuffling(digits):
    n = len(digits.train)
    assert len(make_loader(digits.train, n - 1, True, 0)) == 1
    assert len(make_loader(digits.train, n - 1, False, 0)) == 2
    with pytest.raises(CompressError):
        make_loader(digits.train, 0, True, 0)


@pytest.mark.parametrize("workers", [-1, 1.5, True, "2"])
def test_make_loader_refuses_bad_worker_counts(digits, workers):
    with pytest.raises(CompressError, match="workers"):
        make_loader(digits.train, 8, True, 0, workers=workers)


def test_workers_follow_the_seed(tree):
    bundle = load_data(tree, resolution=8)
    for shuffle in (False, True):
        loader = make_loader(bundle.train, 3, shuffle, 3, workers=2)
        assert loader.num_workers == 2 and loader.persistent_workers
        assert loader.pin_memory == torch.cuda.is_available()
        first = [y.tolist() for _, y in loader]
        assert first == [y.tolist() for _, y in make_loader(bundle.train, 3, shuffle, 3)]  # as in the main process
        passes = [first, [y.tolist() for _, y in loader]]  # persistent workers serve a second pass
        again = make_loader(bundle.train, 3, shuffle, 3, workers=2)
        assert [[y.tolist() for _, y in again] for _ in range(2)] == passes
    x, _ = next(iter(make_loader(bundle.val, 2, False, 0, workers=1)))
    assert torch.equal(x[0], bundle.val[0][0])  # evaluation images are the same in a worker


@pytest.mark.parametrize("cores, expected", [(1, 0), (2, 0), (3, 2), (4, 3), (9, 8), (64, 8)])
def test_default_workers_follow_the_usable_cores(monkeypatch, cores, expected):
    from compressor import data

    monkeypatch.setattr(data.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert data.default_workers() == expected


def test_cycle_skip_replays_the_same_data_order():
    from itertools import islice

    import torch
    from torch.utils.data import TensorDataset

    from compressor.data import cycle, make_loader

    ds = TensorDataset(torch.arange(10).float().unsqueeze(1), torch.zeros(10, dtype=torch.long))
    straight = [b[0].flatten().tolist() for b in islice(cycle(make_loader(ds, 4, True, seed=5)), 7)]
    resumed = [b[0].flatten().tolist() for b in islice(cycle(make_loader(ds, 4, True, seed=5), skip=4), 3)]
    assert resumed == straight[4:]  # passes 2 and 3 reshuffle exactly as in the uninterrupted run


class _Counting(torch.utils.data.Dataset):
    """0..n-1 as one-element samples, counting how often each is read."""

    def __init__(self, n):
        self.n, self.reads = n, [0] * n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads[i] += 1
        return torch.tensor([float(i)]), 0


@pytest.mark.parametrize("skip", [0, 2, 3, 5, 8])
def test_cycle_skips_a_sharded_loader_without_reading_the_skipped_images(skip):
    from itertools import islice

    from compressor.data import cycle, make_loader

    straight = [b[0].flatten().tolist() for b in islice(cycle(make_loader(_Counting(11), 4, True, 5, shard=True)), 9)]
    assert straight[0:3] != straight[3:6] and sorted(sum(straight[3:6], [])) == list(range(11))  # reshuffled passes
    ds = _Counting(11)
    resumed = [b[0].flatten().tolist() for b in islice(cycle(make_loader(ds, 4, True, 5, shard=True), skip), 9 - skip)]
    assert resumed == straight[skip:]
    assert sum(ds.reads) == sum(len(b) for b in resumed)  # nothing read for the skipped batches

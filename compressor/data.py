"""Datasets for search and fine-tuning: scikit-learn's bundled digits, an ImageFolder tree, or
MNIST-style IDX files.

Nothing here downloads anything, and no image is decoded before it is used. :func:`load_data`
returns a :class:`DataBundle` with a train and a validation :class:`~torch.utils.data.Subset`;
:func:`split_halves` splits a dataset in two for searchers that alternate weight and architecture
steps; :func:`make_loader` builds a DataLoader whose batch order is fixed by a seed, with worker
processes on request (:func:`default_workers` suggests how many). Which files of an ImageFolder
tree are used and how they are decoded is :mod:`compressor.image_files`; IDX files are
:mod:`compressor.idx`; the pixels a model is fed, :mod:`compressor.preprocess`.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from compress_base.errors import CompressError

from .distributed import is_distributed, rank, world_size
from .idx import IdxImages, is_idx_folder, read_idx_split
from .image_files import LinkSafeFolder, class_dirs
from .preprocess import Preprocess

logger = logging.getLogger(__name__)

DIGITS_SOURCE = "sklearn digits (1797 8x8 images, 10 classes)"
MIN_VAL_PER_CLASS = 5  # fewer validation images of a class than this make its accuracy noise
_NAMES_SHOWN = 5  # class names a warning lists before "and N more"


@dataclass
class DataBundle:
    """Train and validation sets with what a model needs to know about them."""

    train: Dataset
    val: Dataset
    num_classes: int
    class_names: list[str]
    source: str
    resolution: int
    warnings: list[str] = field(default_factory=list)  # one line each: what is amiss, what to do
    preprocess: Preprocess | None = None  # what made the tensors; None for the digits demo


def load_data(
    data_dir: str | os.PathLike | None = None,
    resolution: int = 32,
    val_fraction: float = 0.2,
    seed: int = 0,
    *,
    preprocess: Preprocess | None = None,
) -> DataBundle:
    """Load the sklearn digits (``data_dir=None``), an IDX folder or an ImageFolder tree.

    Images come out as normalised 3 x ``resolution`` x ``resolution`` float tensors.

    - Digits: today's demo tensors (upsampled, normalised with training statistics); ``preprocess``
      is not used and the bundle's ``preprocess`` is None.
    - IDX folder (``train-images-idx3-ubyte[.gz]`` and its three companions, see
      :mod:`compressor.idx`): the official split, the test files as validation (``val_fraction``
      and ``seed`` are not used). Grey is replicated to RGB; training uses the light augmentation
      whatever ``preprocess`` says (a flip changes what a digit means).
    - ImageFolder tree: a stratified ``val_fraction`` chosen by ``seed``, unless ``data_dir`` holds
      both ``train/`` and ``val/``, which are used as they are. Symbolic links are not followed and
      a file reached under several names is used once.

    ``preprocess`` (default :meth:`Preprocess.default`) gives the evaluation and training
    transforms at ``resolution``. Only cheap checks run here (paths, classes, at least one image per
    class, extensions, IDX headers); an image is decoded when it is used, and one that cannot be
    raises a one-line CompressError naming it then. Two calls with the same seed split alike.
    What was skipped, and classes the validation set measures badly, are logged and listed in the
    bundle's ``warnings``.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise CompressError(f"resolution {resolution!r} must be a positive integer, e.g. 32")
    if not 0.0 < val_fraction < 1.0:
        raise CompressError(
            f"validation fraction {val_fraction!r} must lie strictly between 0 and 1, e.g. 0.2"
        )
    if data_dir is None:
        if preprocess is not None:
            logger.info("data: the digits demo keeps its own normalisation; %s not used", preprocess.source)
        bundle = _load_digits(resolution, val_fraction, seed)
    elif is_idx_folder(Path(data_dir)):
        bundle = _load_idx(Path(data_dir), resolution, preprocess or Preprocess.default())
    else:
        bundle = _load_folder(Path(data_dir), resolution, val_fraction, seed, preprocess or Preprocess.default())
    logger.info(
        "data: %s; %d train / %d val images, %d classes, %dx%d",
        bundle.source, len(bundle.train), len(bundle.val), bundle.num_classes,
        resolution, resolution,
    )
    return bundle


def default_workers() -> int:
    """DataLoader worker processes for this machine: one per core the process may use, less one
    for the training process, at most 8; none on 1-2 cores, where a worker would take the core the
    training step needs (docs/BENCHMARKS.md, "Data loading throughput")."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if cores <= 2 else min(8, cores - 1)


def split_halves(dataset: Dataset, seed: int) -> tuple[Subset, Subset]:
    """Split ``dataset`` into two disjoint random halves that together cover it."""
    n = len(dataset)
    if n < 2:
        raise CompressError(
            f"cannot split a dataset of {n} sample(s) into two halves: provide more training images"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, order[: n // 2]), Subset(dataset, order[n // 2:])


def make_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, seed: int, shard: bool = False, workers: int = 0
) -> DataLoader:
    """A DataLoader whose shuffling (and worker seeding) follows ``seed``.

    Two loaders made with the same seed (and worker count) yield the same batches in the same
    order. When shuffling, a final batch that would hold a single sample is dropped, since batch
    norm cannot train on one sample. With ``shard`` the order comes from a DistributedSampler
    (reshuffled per pass by :func:`cycle` and :func:`compressor.train.train`): under torchrun each
    rank gets its own part of every pass, and in one process the order is that of a world of
    one, so batch ``k`` of one process at batch size ``2b`` holds exactly the images of batch
    ``k`` of two ranks at batch size ``b``. Without ``shard`` every rank sees all of the data.
    ``workers`` > 0 decodes in that many persistent worker processes (random augmentations then
    follow the workers' seeds, and an unsharded shuffled loader orders its later passes otherwise
    than in the main process); memory is pinned when CUDA is available.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CompressError(f"batch size {batch_size!r} must be a positive integer, e.g. 64")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise CompressError(f"workers {workers!r} must be a whole number of processes, 0 or more, e.g. 4")
    sampler = None
    if shard and (shuffle or is_distributed()):
        sampler = DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=shuffle, seed=seed,
                                     drop_last=shuffle)
    n = len(sampler) if sampler is not None else len(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        generator=torch.Generator().manual_seed(seed),
        num_workers=workers,
        drop_last=shuffle and n > 1 and n % batch_size == 1,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )


def cycle(loader: DataLoader, skip: int = 0):
    """Batches of ``loader`` forever, each pass reshuffled, after skipping the first ``skip``: a
    resumed search continues the data order where it stopped.

    A loader made with ``shard=True`` (a DistributedSampler, whose order depends on the pass
    number alone) skips without reading the skipped images, so a resumed search neither waits for
    them nor draws random augmentations for them; any other loader replays them.
    """
    sampler = loader.sampler
    if not isinstance(sampler, DistributedSampler):
        drawn = 0
        while True:
            for batch in loader:
                if drawn >= skip:
                    yield batch
                drawn += 1
    per_pass = len(loader)
    if per_pass == 0:
        return
    passes, offset = divmod(skip, per_pass)
    while True:
        sampler.set_epoch(passes)
        passes += 1
        yield from (_rest_of_pass(loader, offset) if offset else loader)
        offset = 0


def _rest_of_pass(loader: DataLoader, offset: int) -> DataLoader:
    """The current pass of ``loader`` from batch ``offset`` on, without loading the batches before it."""
    start = offset * loader.batch_size
    return DataLoader(Subset(loader.dataset, list(loader.sampler)[start:]), batch_size=loader.batch_size,
                      shuffle=False, num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last)


def _stratified_split(targets, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of a per-class random split; every class with 2+ samples lands on both sides."""
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        rng.shuffle(idx)
        n_val = min(max(int(len(idx) * val_fraction + 0.5), 1), len(idx) - 1)
        val.extend(idx[:n_val].tolist())
        train.extend(idx[n_val:].tolist())
    return sorted(train), sorted(val)


def _load_digits(resolution: int, val_fraction: float, seed: int) -> DataBundle:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(
        images, size=(resolution, resolution), mode="bilinear", align_corners=False,
        antialias=True,
    )
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    train_idx, val_idx = _stratified_split(digits.target, val_fraction, seed)
    fit = images[train_idx]  # normalise with training statistics only
    images = ((images - fit.mean()) / fit.std()).expand(-1, 3, -1, -1)  # grey as RGB, stored once
    full = TensorDataset(images, labels)
    return DataBundle(
        train=Subset(full, train_idx),
        val=Subset(full, val_idx),
        num_classes=10,
        class_names=[str(name) for name in digits.target_names],
        source=DIGITS_SOURCE,
        resolution=resolution,
    )


def _load_idx(root: Path, resolution: int, preprocess: Preprocess) -> DataBundle:
    """The official split of an IDX folder, the test part as validation, light augmentation."""
    split = read_idx_split(root)
    preprocess = dataclasses.replace(preprocess, augment="light")
    train = IdxImages(split.train_images, split.train_labels, preprocess.train_transform(resolution))
    val = IdxImages(split.test_images, split.test_labels, preprocess.eval_transform(resolution))
    train, val = Subset(train, list(range(len(train)))), Subset(val, list(range(len(val))))
    return DataBundle(
        train=train,
        val=val,
        num_classes=len(split.class_names),
        class_names=split.class_names,
        source=f"{root} (IDX, official split: test images as validation)",
        resolution=resolution,
        warnings=_coverage_warnings(split.class_names, _targets(train), _targets(val), None, split=False),
        preprocess=preprocess,
    )


def _scan(root: Path, classes: list[str] | None = None) -> tuple[LinkSafeFolder, list[str]]:
    """Index an ImageFolder tree and say what was skipped in it (logged warnings), with a
    CompressError for each way it can be unusable."""
    if not root.exists():
        raise CompressError(f"data folder {root} does not exist: check the path")
    if not root.is_dir():
        raise CompressError(
            f"data path {root} is not a folder: "
            "pass a folder with one subfolder of images per class"
        )
    links: list[str] = []
    found = class_dirs(root, links)
    if not found:
        _warn_links(root, links)
        raise CompressError(
            f"{root} has no class subfolders: put the images in one subfolder per class, "
            f"e.g. {root / 'cat' / '001.jpg'}"
        )
    if classes is not None and set(found) - set(classes):
        extra = ", ".join(sorted(set(found) - set(classes)))
        raise CompressError(
            f"{root} has class folders missing from the training set ({extra}): "
            "use the same class folder names under train/ and val/"
        )
    folder = LinkSafeFolder(root, classes or found, links)
    warnings = _warn_links(root, links) + _warn_twins(root, folder.twins)
    if not folder.samples:
        raise CompressError(
            f"no images found under {root}: put .jpg/.png files in its class subfolders"
        )
    return folder, warnings


def _warned(message: str) -> list[str]:
    """``[message]``, logged as a warning."""
    logger.warning("%s", message)
    return [message]


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _warn_links(root: Path, links: list[str]) -> list[str]:
    if not links:
        return []
    return _warned(
        f"{_counted(len(links), 'symbolic link')} under {root} not followed "
        f"(e.g. {links[0]} -> {os.readlink(links[0])}): links may loop or lead out of the data "
        "folder; copy what they point to into it (cp -rL) to use it"
    )


def _warn_twins(root: Path, twins: list[str]) -> list[str]:
    if not twins:
        return []
    verb = "is a hard link" if len(twins) == 1 else "are hard links"
    return _warned(
        f"{_counted(len(twins), 'file')} under {root} {verb} to a file listed already "
        f"(e.g. {twins[0]}): each file is used once, under its first name; copy it if the names "
        "were meant to be different images"
    )


def _drop_shared(train: LinkSafeFolder, val: LinkSafeFolder) -> tuple[list[int], list[str]]:
    """Indices of the training samples that are not validation files too, and a warning if some are."""
    in_val = set(val.keys)
    keep = [i for i, key in enumerate(train.keys) if key not in in_val]
    shared = [train.samples[i][0] for i, key in enumerate(train.keys) if key in in_val]
    if not shared:
        return keep, []
    return keep, _warned(
        f"{_counted(len(shared), 'file')} under {train.root} {'is' if len(shared) == 1 else 'are'} "
        f"also under {val.root} (e.g. {shared[0]}): dropped from training, so that validation "
        "measures unseen images; keep each image in one of the two folders only"
    )


def _names(names: list[str]) -> str:
    """``class 'a'`` or ``classes 'a', 'b' and 3 more``."""
    shown = ", ".join(f"'{name}'" for name in names[:_NAMES_SHOWN])
    more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
    return f"class {shown}" if len(names) == 1 else f"classes {shown}{more}"


def _span(counts) -> str:
    low, high = int(min(counts)), int(max(counts))
    return str(low) if low == high else f"{low}-{high}"


def _coverage_warnings(
    classes: list[str], train_targets, val_targets, folder: Path | None, split: bool
) -> list[str]:
    """Warnings (logged) for classes that validation misses or holds under MIN_VAL_PER_CLASS images of.

    ``folder`` holds the class folders images should be added to (None: IDX test files); ``split``
    says that validation is a fraction of it.
    """
    train_counts = np.bincount(train_targets, minlength=len(classes))
    val_counts = np.bincount(val_targets, minlength=len(classes))
    warnings = []
    missing = [i for i, n in enumerate(val_counts) if n == 0]
    if missing:
        counts = f"train has {_span(train_counts[missing])}{' each' if len(missing) > 1 else ''}"
        add = _where_to_add(folder, [classes[i] for i in missing])
        warnings += _warned(
            f"validation has no image of {_names([classes[i] for i in missing])} ({counts}): "
            f"{'its' if len(missing) == 1 else 'their'} accuracy is not measured; {add}"
        )
    few = [i for i, n in enumerate(val_counts) if 0 < n < MIN_VAL_PER_CLASS]
    if few:
        span = _span(val_counts[few])
        add = ("use more images per class or a larger validation fraction" if split
               else _where_to_add(folder, [classes[i] for i in few]))
        warnings += _warned(
            f"validation has only {span} image{'' if span == '1' else 's'} of "
            f"{_names([classes[i] for i in few])}: accuracy per class is noise; {add}"
        )
    return warnings


def _where_to_add(folder: Path | None, names: list[str]) -> str:
    if folder is None:
        return "use t10k-* test files with more images of each class"
    return f"add images to {folder / names[0]}" if len(names) == 1 else f"add images to their folders in {folder}"


def _check_classes(folder: LinkSafeFolder, targets: list[int]) -> None:
    counts = np.bincount(targets, minlength=len(folder.classes))
    empty = [name for name, count in zip(folder.classes, counts) if count == 0]
    if empty:
        raise CompressError(
            f"class folder {Path(folder.root) / empty[0]} holds no images: "
            "add images to it or remove it"
        )
    if len(folder.classes) < 2:
        raise CompressError(
            f"{folder.root} has a single class ({folder.classes[0]}): "
            "a classifier needs at least two class subfolders"
        )


def _load_folder(
    root: Path, resolution: int, val_fraction: float, seed: int, preprocess: Preprocess
) -> DataBundle:
    if (root / "train").is_dir() and (root / "val").is_dir():
        train, val, warnings = _load_train_val(root)
        val_root = root / "val"
    else:
        train, val, warnings = _load_split(root, val_fraction, seed)
        val_root = root
    train.dataset.transform = preprocess.train_transform(resolution)
    val.dataset.transform = preprocess.eval_transform(resolution)
    classes = train.dataset.classes
    warnings += _coverage_warnings(
        classes, _targets(train), _targets(val), val_root, split=val_root == root
    )
    return DataBundle(
        train=train,
        val=val,
        num_classes=len(classes),
        class_names=list(classes),
        source=str(root),
        resolution=resolution,
        warnings=warnings,
        preprocess=preprocess,
    )


def _load_train_val(root: Path) -> tuple[Subset, Subset, list[str]]:
    """Train and validation sets of ``root/train`` and ``root/val``, without the files in both."""
    train_set, warnings = _scan(root / "train")
    val_set, val_warnings = _scan(root / "val", classes=train_set.classes)
    train_idx, shared = _drop_shared(train_set, val_set)
    _check_classes(train_set, [train_set.targets[i] for i in train_idx])
    val = Subset(val_set, list(range(len(val_set))))
    return Subset(train_set, train_idx), val, warnings + val_warnings + shared


def _load_split(
    root: Path, val_fraction: float, seed: int
) -> tuple[Subset, Subset, list[str]]:
    """A stratified split of the tree at ``root``; the two sets share the samples, not the transform."""
    full, warnings = _scan(root)
    _check_classes(full, full.targets)
    train_idx, val_idx = _stratified_split(full.targets, val_fraction, seed)
    return Subset(copy.copy(full), train_idx), Subset(full, val_idx), warnings


def _targets(subset: Subset) -> list[int]:
    return [subset.dataset.targets[i] for i in subset.indices]

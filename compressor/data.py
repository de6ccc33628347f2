"""Datasets for search and fine-tuning: scikit-learn's bundled digits, or an ImageFolder tree.

Nothing here downloads anything. :func:`load_data` returns a :class:`DataBundle` with a train and
a validation :class:`~torch.utils.data.Subset`; :func:`split_halves` splits a dataset in two for
searchers that alternate weight and architecture steps; :func:`make_loader` builds a DataLoader
whose batch order is fixed by a seed. Which files of an ImageFolder tree are used, and how they
are decoded and checked, is :mod:`compressor.image_files`.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torch.utils.data.distributed import DistributedSampler
from torchvision import transforms

from compress_base.errors import CompressError

from .distributed import is_distributed, rank, world_size
from .image_files import LinkSafeFolder, class_dirs, verify_images

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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


def load_data(
    data_dir: str | os.PathLike | None = None,
    resolution: int = 32,
    val_fraction: float = 0.2,
    seed: int = 0,
    quiet: bool = False,
) -> DataBundle:
    """Load the sklearn digits (``data_dir=None``) or an ImageFolder tree at ``data_dir``.

    Images come out as normalised 3 x ``resolution`` x ``resolution`` float tensors. The
    validation set is a stratified ``val_fraction`` of the data chosen by ``seed``, unless
    ``data_dir`` holds both ``train/`` and ``val/`` subfolders, which are then used as they are.
    ``quiet`` hides the progress bar of the image check. Raises :class:`CompressError` for
    missing, empty, single-class or unreadable data. Symbolic links inside the tree are not
    followed and a file reached under several names is used once; what was skipped, and classes
    the validation set measures badly, are logged and listed in the bundle's ``warnings``.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise CompressError(f"resolution {resolution!r} must be a positive integer, e.g. 32")
    if not 0.0 < val_fraction < 1.0:
        raise CompressError(
            f"validation fraction {val_fraction!r} must lie strictly between 0 and 1, e.g. 0.2"
        )
    if data_dir is None:
        bundle = _load_digits(resolution, val_fraction, seed)
    else:
        bundle = _load_folder(Path(data_dir), resolution, val_fraction, seed, quiet)
    logger.info(
        "data: %s; %d train / %d val images, %d classes, %dx%d",
        bundle.source, len(bundle.train), len(bundle.val), bundle.num_classes,
        resolution, resolution,
    )
    return bundle


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
    dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0, shard: bool = False
) -> DataLoader:
    """A DataLoader whose shuffling (and worker seeding) follows ``seed``.

    Two loaders made with the same seed yield the same batches in the same order. When
    shuffling, a final batch that would hold a single sample is dropped, since batch norm
    cannot train on one sample. With ``shard`` the order comes from a DistributedSampler
    (reshuffled per pass by :func:`cycle` and :func:`compressor.train.train`): under torchrun each
    rank gets its own part of every pass, and in one process the order is that of a world of
    one, so batch ``k`` of one process at batch size ``2b`` holds exactly the images of batch
    ``k`` of two ranks at batch size ``b``. Without ``shard`` every rank sees all of the data.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CompressError(f"batch size {batch_size!r} must be a positive integer, e.g. 64")
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
        num_workers=num_workers,
        drop_last=shuffle and n > 1 and n % batch_size == 1,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
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
    ).expand(-1, 3, -1, -1)
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    train_idx, val_idx = _stratified_split(digits.target, val_fraction, seed)
    fit = images[train_idx]  # normalise with training statistics only
    images = ((images - fit.mean()) / fit.std()).contiguous()
    full = TensorDataset(images, labels)
    return DataBundle(
        train=Subset(full, train_idx),
        val=Subset(full, val_idx),
        num_classes=10,
        class_names=[str(name) for name in digits.target_names],
        source=DIGITS_SOURCE,
        resolution=resolution,
    )


def _folder_transforms(resolution: int) -> tuple[transforms.Compose, transforms.Compose]:
    """(train, eval) transforms; the default ImageFolder loader already converts to RGB."""
    tail = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    resize = transforms.Resize((resolution, resolution), antialias=True)
    train = transforms.Compose([
        resize,
        transforms.RandomCrop(resolution, padding=max(1, resolution // 8), padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        *tail,
    ])
    return train, transforms.Compose([resize, *tail])


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
    classes: list[str], train_targets, val_targets, folder: Path, split: bool
) -> list[str]:
    """Warnings (logged) for classes that validation misses or holds under MIN_VAL_PER_CLASS images of.

    ``folder`` holds the class folders images should be added to; ``split`` says that validation
    is a fraction of it.
    """
    train_counts = np.bincount(train_targets, minlength=len(classes))
    val_counts = np.bincount(val_targets, minlength=len(classes))
    warnings = []
    missing = [i for i, n in enumerate(val_counts) if n == 0]
    if missing:
        counts = f"train has {_span(train_counts[missing])}{' each' if len(missing) > 1 else ''}"
        add = (f"add images to {folder / classes[missing[0]]}" if len(missing) == 1
               else f"add images to their folders in {folder}")
        warnings += _warned(
            f"validation has no image of {_names([classes[i] for i in missing])} ({counts}): "
            f"{'its' if len(missing) == 1 else 'their'} accuracy is not measured; {add}"
        )
    few = [i for i, n in enumerate(val_counts) if 0 < n < MIN_VAL_PER_CLASS]
    if few:
        span = _span(val_counts[few])
        add = ("use more images per class or a larger validation fraction" if split
               else f"add images to {folder / classes[few[0]]}" if len(few) == 1
               else f"add images to their folders in {folder}")
        warnings += _warned(
            f"validation has only {span} image{'' if span == '1' else 's'} of "
            f"{_names([classes[i] for i in few])}: accuracy per class is noise; {add}"
        )
    return warnings


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
    root: Path, resolution: int, val_fraction: float, seed: int, quiet: bool
) -> DataBundle:
    train_tf, eval_tf = _folder_transforms(resolution)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train, val, warnings = _load_train_val(root, quiet)
        val_root = root / "val"
    else:
        train, val, warnings = _load_split(root, val_fraction, seed, quiet)
        val_root = root
    train.dataset.transform, val.dataset.transform = train_tf, eval_tf
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
    )


def _load_train_val(root: Path, quiet: bool) -> tuple[Subset, Subset, list[str]]:
    """Train and validation sets of ``root/train`` and ``root/val``, without the files in both."""
    train_set, warnings = _scan(root / "train")
    val_set, val_warnings = _scan(root / "val", classes=train_set.classes)
    train_idx, shared = _drop_shared(train_set, val_set)
    _check_classes(train_set, [train_set.targets[i] for i in train_idx])
    verify_images([train_set.samples[i][0] for i in train_idx] + [p for p, _ in val_set.samples], quiet)
    val = Subset(val_set, list(range(len(val_set))))
    return Subset(train_set, train_idx), val, warnings + val_warnings + shared


def _load_split(
    root: Path, val_fraction: float, seed: int, quiet: bool
) -> tuple[Subset, Subset, list[str]]:
    """A stratified split of the tree at ``root``; the two sets share the samples, not the transform."""
    full, warnings = _scan(root)
    _check_classes(full, full.targets)
    verify_images([p for p, _ in full.samples], quiet)
    train_idx, val_idx = _stratified_split(full.targets, val_fraction, seed)
    return Subset(copy.copy(full), train_idx), Subset(full, val_idx), warnings


def _targets(subset: Subset) -> list[int]:
    return [subset.dataset.targets[i] for i in subset.indices]

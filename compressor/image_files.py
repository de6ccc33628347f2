"""The files of an ImageFolder tree: which are listed (no symbolic link followed, each file once
under hard links) and how they are decoded (16- and 32-bit greyscale scaled to 8 bits), for
:func:`compressor.data.load_data`.

Nothing is opened before training: a file that cannot be decoded raises :class:`UnreadableImage`
(a one-line CompressError naming it) when it is first read, in the main process or in a
DataLoader worker.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import has_file_allowed_extension

from compress_base.errors import CompressError, first_line

__all__ = ["LinkSafeFolder", "UnreadableImage", "class_dirs"]


class UnreadableImage(CompressError):
    """An image file that cannot be decoded, in one line that names it.

    A DataLoader worker re-raises an exception in the main process as ``type(exc)(text)``, where the
    text is "Caught ... in DataLoader worker" and the worker's whole traceback; this class keeps
    only its own message from that text, so the user still sees one line naming the file.
    """

    def __init__(self, message: str):
        super().__init__(_own_line(message, f"{type(self).__module__}.{type(self).__qualname__}: "))


def _own_line(message: str, prefix: str) -> str:
    """``message``, or the last line of it that starts with ``prefix`` (without the prefix)."""
    own = [line[len(prefix):] for line in message.splitlines() if line.startswith(prefix)]
    return own[-1] if own else message


class LinkSafeFolder(ImageFolder):
    """ImageFolder over the given class folders that follows no symbolic link, lists each file
    (device and inode) once and decodes 16-bit greyscale correctly.

    Skipped links are appended to ``links``; ``twins`` holds the files dropped as another name of a
    listed one, ``keys`` the (device, inode) of each sample.
    """

    def __init__(self, root: Path, classes: list[str], links: list[str]):
        self._classes, self.links = classes, links
        self.twins: list[str] = []
        self.keys: list[tuple[int, int]] = []
        super().__init__(str(root), loader=_load_rgb, allow_empty=True)

    def find_classes(self, directory):
        return self._classes, {name: i for i, name in enumerate(self._classes)}

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None,
                     allow_empty=False):
        """(path, class index) of every image file in the class folders, in torchvision's order."""
        samples, seen = [], set()
        for name in sorted(class_to_idx):
            for entry in _files(Path(directory, name), self.links):
                if not has_file_allowed_extension(entry.name, extensions):
                    continue
                stat = entry.stat(follow_symlinks=False)
                key = (stat.st_dev, stat.st_ino)
                if key in seen:
                    self.twins.append(entry.path)
                    continue
                seen.add(key)
                self.keys.append(key)
                samples.append((entry.path, class_to_idx[name]))
        return samples


def class_dirs(root: Path, links: list[str]) -> list[str]:
    """Names of the non-hidden real subfolders of ``root``; links to folders go to ``links``."""
    names = []
    for entry in _entries(str(root)):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if entry.is_symlink():
            links.append(entry.path)
        else:
            names.append(entry.name)
    return sorted(names)


def _files(folder: Path, links: list[str]) -> list[os.DirEntry]:
    """Regular files below ``folder`` sorted by folder then name, as torchvision's walk lists them.

    No symbolic link is followed (neither to a folder nor to a file), so the walk cannot loop,
    leave the tree or re-enter it; the links met below ``folder`` are appended to ``links``.
    """
    if folder.is_symlink() or not folder.is_dir():  # a linked class folder is counted by class_dirs
        return []
    found, stack = [], [str(folder)]
    while stack:
        path = stack.pop()
        entries = _entries(path)
        found.append((path, [e for e in entries if e.is_file(follow_symlinks=False)]))
        links.extend(e.path for e in entries if e.is_symlink())
        stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
    return [entry for _, files in sorted(found, key=lambda pair: pair[0]) for entry in files]


def _entries(folder: str) -> list[os.DirEntry]:
    """The entries of ``folder`` by name, with a CompressError if it cannot be listed."""
    try:
        return sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise CompressError(
            f"cannot list folder {folder} ({exc.strerror or exc}): check its permissions"
        ) from exc


def _load_rgb(path: str) -> Image.Image:
    """The image at ``path`` as 8-bit RGB (grey replicated); 16- and 32-bit greyscale is scaled
    down, not clipped. Raises :class:`UnreadableImage` if it cannot be decoded."""
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I"):
                return Image.fromarray(_to_8_bits(np.asarray(im))).convert("RGB")
            return im.convert("RGB")
    except Exception as exc:  # any failure means the file is unusable: name it
        raise UnreadableImage(
            f"image file {path} cannot be read ({type(exc).__name__}: {first_line(exc)}): remove or replace it"
        ) from exc


def _to_8_bits(pixels: np.ndarray) -> np.ndarray:
    """Integer greyscale as uint8: the high byte of 16-bit values, else the value range stretched."""
    pixels = pixels.astype(np.int64)
    low, high = int(pixels.min()), int(pixels.max())
    if low >= 0 and high <= 0xFFFF:
        return (pixels >> 8).astype(np.uint8)
    return ((pixels - low) * 255 // max(high - low, 1)).astype(np.uint8)

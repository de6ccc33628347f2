"""State files that let a killed stage continue (``--resume``): training epochs, search epochs and steps.

A stage saves a dict of tensors and plain values after every epoch or step with
:func:`save_state` (rank 0 alone, atomically) and reads it back with :func:`restoring`
(``weights_only``: nothing in the file can run code).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from compress_base.errors import CompressError
from compress_base.fileio import write_torch

from .distributed import is_main


def save_state(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically; under torchrun only rank 0 writes."""
    if is_main():
        write_torch(Path(path), state)


@contextlib.contextmanager
def restoring(path: str | Path, what: str) -> Iterator[dict]:
    """Yield the state saved at ``path``. Any failure, reading it or applying it in the ``with``
    body (another run's file, a damaged one), becomes one :class:`CompressError` naming ``what``."""
    try:
        yield torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, the remedy is the same
        raise CompressError(f"cannot resume {what} from {path} ({type(exc).__name__}): it belongs to another "
                            f"run or is damaged; delete it to start {what} again") from None

"""The one way this package shows progress: a tqdm bar, hidden when quiet.

Verbosity follows one rule for logs and bars alike: ``quiet`` hides both (the CLI sets logging to
WARNING); otherwise bars show when stderr is a terminal. The lines a loop reports per epoch or step
go through :func:`show_line`, which keeps them visible above its bar. Needs no PyTorch.
"""
from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm


def progress_bar(total: int | None = None, *, desc: str, unit: str = "it", quiet: bool = False, initial: int = 0,
                 leave: bool = True, iterable=None) -> tqdm:
    """A tqdm bar, hidden when ``quiet`` and whenever stderr is not a terminal."""
    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, leave=leave,
                disable=True if quiet else None, dynamic_ncols=True)


def show_line(bar: tqdm, text: str, logger: logging.Logger) -> None:
    """A per-epoch or per-step line: printed above ``bar`` when the bar shows (on stderr, where the bar
    is; the bar redraws below it, so the line stays visible while the bar moves on), else logged at
    INFO through ``logger`` (quiet, not on a terminal, or not rank 0)."""
    if bar.disable:
        logger.info(text)
    else:
        bar.write(text, file=sys.stderr)

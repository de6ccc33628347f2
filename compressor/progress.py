"""The one way this package shows progress: a tqdm bar, hidden when quiet.

Verbosity follows one rule for logs and bars alike: ``quiet`` hides both (the CLI sets logging to
WARNING); otherwise bars show when stderr is a terminal. Needs no PyTorch.
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int | None = None, *, desc: str, unit: str = "it", quiet: bool = False, initial: int = 0,
                 leave: bool = True, iterable=None) -> tqdm:
    """A tqdm bar, hidden when ``quiet`` and whenever stderr is not a terminal."""
    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, leave=leave,
                disable=True if quiet else None, dynamic_ncols=True)


def write_above(bar: tqdm, text: str) -> None:
    """Print ``text`` as a line above ``bar`` (on stderr, where the bar is), which redraws below it:
    the line stays visible while the bar moves on."""
    bar.write(text, file=sys.stderr)

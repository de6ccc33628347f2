"""Per-epoch and per-step lines stay visible above the progress bar in a terminal (training, the
searchers' loop, the ShrinkCNN cell search), and are log lines where no bar shows."""
from __future__ import annotations

import io
import logging
import sys

import pytest
from torch.utils.data import Subset
from tqdm import tqdm

from compressor import train
from compressor.data import load_data
from compressor.nas.cell_search import shrinkcnn_search
from compressor.search.base import SearchContext, SearchResult
from compressor.search.loop import LoopSearcher, run_loop


class Terminal(io.StringIO):
    """A stderr that reads as a terminal, so bars show (as in an interactive run)."""

    def isatty(self) -> bool:
        return True

    def lines(self, start: str) -> list[str]:
        """The lines written that start with ``start`` (the bar's redraws after a carriage return apart)."""
        return [part for line in self.getvalue().splitlines() for part in line.split("\r") if part.startswith(start)]


def _logged(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


@pytest.mark.parametrize("hidden", [False, True])
def test_epoch_lines_stay_above_the_bar(hidden, capsys, caplog):
    record = {"epoch": 2, "loss": 0.5, "train_acc": 0.8, "val_acc": 0.75, "seconds": 3.0}
    bar = tqdm(total=10, disable=hidden)
    with caplog.at_level(logging.INFO, logger="compressor.train"):
        train._show(record, "fine-tune", 5, bar)
    bar.close()
    line = "fine-tune epoch 2/5: loss 0.5000 acc 0.800 val 0.750 (3.0s)"
    if hidden:  # no bar (quiet, or not a terminal): a log line
        assert [r.getMessage() for r in caplog.records] == [line]
    else:  # printed above the bar, not only in its postfix (which the next epoch overwrites)
        assert line in capsys.readouterr().err and not caplog.records


class Counting(LoopSearcher):
    """Three epochs of one step each; the record of epoch i holds 10 * i."""

    name = "counting"

    def bar_total(self) -> int:
        return 3

    def done(self, index, history) -> bool:
        return index > 3

    def step(self, index) -> dict:
        self.bar.update()
        return {"epoch": index, "value": 10.0 * index}

    def summary(self, record) -> str:
        return f"value {record['value']:.1f}"

    def total_units(self) -> int:
        return 3

    def finish(self, history) -> SearchResult:
        return SearchResult(architecture=None, history=history)


@pytest.mark.parametrize("quiet", [False, True])
def test_search_epoch_lines_stay_above_the_bar(quiet, monkeypatch, caplog):
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    searcher = Counting(None, None, SearchContext(quiet=quiet, seed=0), None)
    with caplog.at_level(logging.INFO, logger="compressor.search.loop"):
        result = run_loop(searcher)
    assert [r["value"] for r in result.history] == [10.0, 20.0, 30.0]
    lines = [f"counting epoch {i}/3: value {10 * i:.1f}" for i in (1, 2, 3)]
    logged = _logged(caplog, "compressor.search.loop")
    if quiet:  # no bar: the lines are logged (the CLI's -q hides them with every other log line)
        assert logged == lines and not screen.getvalue()
    else:  # each on its own line above the bar, which redraws below it; not logged over the bar
        assert screen.lines("counting epoch") == lines and not logged
        assert screen.lines("counting: 100%")  # the bar itself showed, and ended full


def test_cell_search_step_lines_stay_above_the_bar(monkeypatch, caplog):
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    bundle = load_data(None, resolution=16, seed=0)
    with caplog.at_level(logging.INFO, logger="compressor.nas.cell_search"):
        snapshots = shrinkcnn_search(Subset(bundle.train, range(32)), Subset(bundle.val, range(16)), 10, (3, 16, 16),
                                     k=2, epochs=1, patience=1, batch_size=16, width=4, stem=8, max_steps=1)
    shown = screen.lines("shrinkcnn step")
    assert [s.split(":")[0] for s in shown] == ["shrinkcnn step 0", "shrinkcnn step 1"] and len(snapshots) == 2
    assert shown[1].endswith(f"score {snapshots[1].score:.4f}")
    assert not _logged(caplog, "compressor.nas.cell_search")

"""docs/ERRORS.md's report-version rows against what compressor/run_report.py reads.

The rows state the range of report.json format versions this compressor reads; the test reads the
range and the messages out of the doc, then feeds the reader the rows' own inputs and the versions at
both ends of the range, so a new FORMAT_VERSION without a doc update fails here.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from compress_base.errors import CompressError
from compressor.run_report import RunReport

ERRORS_MD = Path(__file__).resolve().parents[1] / "docs" / "ERRORS.md"
NEWER = "a report written by a newer compressor"
NOT_A_VERSION = "a report version that is not one"


def _row(case: str) -> tuple[str, str]:
    """The (input, message) cells of the ERRORS.md row for ``case``, code marks stripped."""
    rows = [line for line in ERRORS_MD.read_text().splitlines() if line.startswith(f"| {case} |")]
    assert len(rows) == 1, f"docs/ERRORS.md has {len(rows)} rows for {case!r}"
    cells = [c.strip().strip("`").strip() for c in rows[0].strip("|").split(" | ")]
    return cells[1], cells[2]


def _doc_range() -> tuple[int, int]:
    ranges = {re.search(r"reads versions (\d+) to (\d+)", _row(NEWER)[1]).groups(),
              re.search(r"is not a report version \((\d+) to (\d+)\)", _row(NOT_A_VERSION)[1]).groups()}
    assert len(ranges) == 1, f"the two rows state different ranges: {ranges}"
    low, high = ranges.pop()
    return int(low), int(high)


def _version_error(version) -> str | None:
    """The version error for a report of ``version`` (None: the version is read and the next check,
    the missing model name, fails instead)."""
    with pytest.raises(CompressError) as err:
        RunReport.from_dict({"format_version": version}, "run/report.json")
    message = str(err.value)
    return None if "no model name" in message else message


def test_the_stated_range_is_the_one_read():
    low, high = _doc_range()
    for version in range(low, high + 1):
        assert _version_error(version) is None, version
    assert "written by a newer compressor" in (_version_error(high + 1) or "read"), high + 1
    assert "is not a report version" in (_version_error(low - 1) or "read"), low - 1


@pytest.mark.parametrize("case", [NEWER, NOT_A_VERSION])
def test_the_rows_messages_are_the_readers(case):
    example, message = _row(case)
    key, value = example.split(": ", 1)
    assert key == '"format_version"'
    assert f"error: {_version_error(json.loads(value))}" == message

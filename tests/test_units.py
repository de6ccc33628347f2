"""Tests for compressor.units: sizes (300M), latencies (4ms), input shapes (3x224x224) and budgets
that are a count or a fraction of the original (50%)."""
from __future__ import annotations

import math

import pytest

from compress_base.errors import CompressError
from compressor.units import (
    format_count,
    fraction_of,
    parse_count_or_fraction,
    parse_latency_ms,
    parse_shape,
    parse_size,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("300M", 300_000_000),
        ("1.5G", 1_500_000_000),
        ("250K", 250_000),
        ("12", 12),
        ("250k", 250_000),
        (" 4.09G ", 4_090_000_000),
        ("2T", 2_000_000_000_000),
        ("1e6", 1_000_000),
        (300_000_000, 300_000_000),
        (1.5e9, 1_500_000_000),
    ],
)
def test_parse_size(text, expected):
    value = parse_size(text)
    assert value == expected
    assert isinstance(value, int)


@pytest.mark.parametrize("text", ["300X", "-5M", "0", "", "M", "1.5.G", "300MB", "0.4", 0, -3])
def test_parse_size_rejects(text):
    with pytest.raises(CompressError) as info:
        parse_size(text, what="MAC budget")
    msg = str(info.value)
    assert "MAC budget" in msg and "\n" not in msg
    assert "300M" in msg  # says what to write instead


@pytest.mark.parametrize("text", ["1e400", "9" * 400], ids=["1e400", "400-digits"])
def test_parse_size_rejects_overflow(text):
    with pytest.raises(CompressError):
        parse_size(text)


@pytest.mark.parametrize(
    "text, expected",
    [("4ms", 4.0), ("800us", 0.8), ("0.5s", 500.0), ("0.8ms", 0.8), ("2", 2.0), (" 3 ms ", 3.0), (1.25, 1.25)],
)
def test_parse_latency_ms(text, expected):
    assert parse_latency_ms(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("text", ["fast", "", "4min", "-1ms", "0ms", "0", "4 ms ms", 0, -2.0])
def test_parse_latency_rejects(text):
    with pytest.raises(CompressError) as info:
        parse_latency_ms(text)
    assert "4ms" in str(info.value)


@pytest.mark.parametrize(
    "text, expected",
    [("3x224x224", (3, 224, 224)), ("1X32X48", (1, 32, 48)), ("3,64,64", (3, 64, 64)), ([3, 8, 8], (3, 8, 8))],
)
def test_parse_shape(text, expected):
    shape = parse_shape(text)
    assert shape == expected
    assert all(type(s) is int for s in shape)


@pytest.mark.parametrize("text", ["224x224", "3x0x4", "abc", "3x224x224x1", "", "3x-1x4", "3x2.5x4", (3, 4)])
def test_parse_shape_rejects(text):
    with pytest.raises(CompressError) as info:
        parse_shape(text)
    assert "3x224x224" in str(info.value)


@pytest.mark.parametrize(
    "n, text",
    [(4_089_184_256, "4.09G"), (300_000_000, "300M"), (250_000, "250K"), (1_500, "1.5K"), (12, "12"), (0, "0")],
)
def test_format_count(n, text):
    assert format_count(n) == text


def test_format_then_parse_round_trips_to_three_digits():
    for n in (3_504_872, 25_557_032, 4_089_184_256, 999):
        back = parse_size(format_count(n))
        assert abs(back - n) <= 0.005 * n


@pytest.mark.parametrize("value, expected", [
    ("300M", 300_000_000), (300_000_000, 300_000_000), (3e8, 300_000_000), ("1.5G", 1_500_000_000), (1, 1), ("1", 1),
    (2**53 + 1, 2**53 + 1),
])
def test_count_or_fraction_reads_counts_as_ints(value, expected):
    parsed = parse_count_or_fraction(value)
    assert parsed == expected and type(parsed) is int


@pytest.mark.parametrize("value, expected", [
    ("50%", 0.5), (" 25 % ", 0.25), ("12.5%", 0.125), ("100%", 1.0), ("0.1%", 0.001), (0.5, 0.5), (1.0, 1.0),
])
def test_count_or_fraction_reads_fractions_as_floats(value, expected):
    parsed = parse_count_or_fraction(value)
    assert parsed == expected and type(parsed) is float


@pytest.mark.parametrize("value, says", [
    ("0%", "above 0%"), ("150%", "at most 100%"), ("-5%", "not a count or a fraction"), ("0.5", "50%"),
    ("abc", "not a count or a fraction"), ("300MB", "not a count or a fraction"), (None, "not a count"),
    (True, "not a count"), ([1], "not a count"), (0, "must be positive"), (-3, "must be positive"),
    (-0.5, "must be positive"), (0.0, "must be positive"), (float("nan"), "must be positive"),
    (float("inf"), "too large"), ("1e400", "too large"), (10**19, "too large"),
])
def test_count_or_fraction_rejects_in_one_line(value, says):
    with pytest.raises(CompressError) as info:
        parse_count_or_fraction(value, "--budget-macs")
    msg = str(info.value)
    assert says in msg and "--budget-macs" in msg and "\n" not in msg


def test_fraction_of_is_the_floor_of_the_decimal_fraction():
    # 0.29 * 100 is 28.999999999999996 in binary floating point: a plain floor would give 28
    assert math.floor(0.29 * 100) == 28
    assert fraction_of(0.29, 100) == 29
    assert fraction_of(parse_count_or_fraction("29%"), 100) == 29
    assert fraction_of(0.5, 1_823_522_817) == 911_761_408  # floor(1823522817 / 2)
    assert fraction_of(parse_count_or_fraction("33.3%"), 1_000_001) == 333_000  # 333000.333
    assert fraction_of(1.0, 12345) == 12345

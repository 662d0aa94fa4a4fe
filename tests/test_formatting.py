"""The shared number formatters: what each spells, and that nothing unmeasured reads as a number."""

from __future__ import annotations

import math

import pytest

from pipeline import formatting as fmt

NOT_NUMBERS = [None, math.nan, math.inf, -math.inf, "3.2", True]


@pytest.mark.parametrize(
    "call",
    [
        fmt.number, fmt.ms, lambda v: fmt.ms(v, compact=True), fmt.percent, fmt.ratio, fmt.millions, fmt.kilobytes,
    ],
)
@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_anything_but_a_finite_number_is_missing(call, value) -> None:
    assert call(value) == fmt.MISSING


def test_missing_can_be_spelled_per_table() -> None:
    assert fmt.number(None, missing=fmt.HYPHEN) == "-"
    assert fmt.number(math.nan, missing=fmt.HYPHEN) == "-"
    assert fmt.millions(None, missing="n/a") == "n/a"


def test_number_spec_scale_and_suffix() -> None:
    assert fmt.number(1.23456) == "1.235"
    assert fmt.number(0.5, ".1f", scale=100, suffix="%") == "50.0%"
    assert fmt.number(0.0123, "+.2f", scale=100.0) == "+1.23"


def test_number_keeps_integers_integral_for_thousands_separators() -> None:
    assert fmt.number(1234567, ",") == "1,234,567"
    assert fmt.number(42, "d") == "42"


@pytest.mark.parametrize(
    ("value", "text"), [(0.06614, "0.0661 ms"), (1.234, "1.23 ms"), (99.994, "99.99 ms"), (123.45, "123.5 ms")]
)
def test_ms_digits_follow_the_size(value: float, text: str) -> None:
    assert fmt.ms(value) == text
    assert fmt.ms(value, unit=False) == text.removesuffix(" ms")


@pytest.mark.parametrize(("value", "text"), [(0.06614, "0.0661"), (1.234, "1.23"), (9.99, "9.99"), (10, "10.0"), (123.45, "123.5")])
def test_compact_ms_is_three_figures_below_ten(value: float, text: str) -> None:
    assert fmt.ms(value, unit=False, compact=True) == text


def test_percent() -> None:
    assert fmt.percent(0.93224) == "93.22%"
    assert fmt.percent(0.5, 1) == "50.0%"
    assert fmt.percent(0.0015, signed=True) == "+0.15%"
    assert fmt.percent(-0.0015, signed=True) == "-0.15%"


def test_ratio() -> None:
    assert fmt.ratio(1.0571) == "×1.057"
    assert fmt.ratio(2, 1) == "×2.0"


def test_general_numbers_in_significant_figures_anything_else_as_text() -> None:
    assert fmt.general(3.14159265) == "3.142"
    assert fmt.general(12) == "12"
    assert fmt.general(123456) == "1.235e+05"
    assert fmt.general("cpu0") == "cpu0"
    assert fmt.general(math.nan) == "nan"
    assert fmt.general(None) == fmt.MISSING
    assert fmt.general(None, missing="None") == "None"


def test_millions_divides_so_boundaries_round_like_the_build_table_did() -> None:
    assert fmt.millions(1_234_567) == "1.23M"
    assert fmt.millions(0) == "0.00M"
    assert all(fmt.millions(n) == f"{n / 1e6:.2f}M" for n in range(5_000, 3_000_000, 10_000))


def test_kilobytes_are_1024_bytes() -> None:
    assert fmt.kilobytes(1024) == "1.0 KB"
    assert fmt.kilobytes(121_139) == "118.3 KB"
    assert fmt.kilobytes(1536, 2) == "1.50 KB"

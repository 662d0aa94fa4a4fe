"""Constraint parsing and selection, including the "nothing fits" explanation."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.sweep.constraints import Constraint, parse_constraints, select

ROWS = [
    {"name": "fast", "accuracy": 0.88, "latency_ms": 1.0, "size_kb": 60.0},
    {"name": "mid", "accuracy": 0.91, "latency_ms": 2.0, "size_kb": 100.0},
    {"name": "mid-slower", "accuracy": 0.91, "latency_ms": 2.5, "size_kb": 90.0},
    {"name": "big", "accuracy": 0.93, "latency_ms": 6.0, "size_kb": 220.0},
    {"name": "broken", "accuracy": None, "latency_ms": None, "size_kb": None, "error": "unreachable"},
]


def test_parse_accepts_spaces_scientific_and_strict_ops() -> None:
    parsed = parse_constraints(" latency_ms <= 2.5 , accuracy>=9e-1,size_kb<120 ")
    assert parsed == [Constraint("latency_ms", "<=", 2.5), Constraint("accuracy", ">=", 0.9), Constraint("size_kb", "<", 120.0)]


@pytest.mark.parametrize("text", ["latency_ms=<2", "accuracy>=", "accuracy >= high", "", " , ", "latency_ms<=2;accuracy>=0.9"])
def test_unparsable_expressions_name_the_term(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_constraints(text)
    assert "constraint" in str(err.value).lower()


def test_unknown_metric_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="Unknown metric 'latency'.*latency_ms"):
        parse_constraints("latency<=2")


def test_best_is_most_accurate_feasible_then_fastest() -> None:
    chosen = select(ROWS, parse_constraints("latency_ms<=3,size_kb<=120"))
    assert ROWS[chosen.best]["name"] == "mid"  # ties with mid-slower on accuracy, wins on latency
    assert sorted(ROWS[i]["name"] for i in chosen.feasible) == ["fast", "mid", "mid-slower"]


def test_unmeasured_rows_never_qualify() -> None:
    chosen = select(ROWS, parse_constraints("size_kb<=1000"))
    assert "broken" not in [ROWS[i]["name"] for i in chosen.feasible]


def test_nothing_fits_names_the_closest_constraint() -> None:
    chosen = select(ROWS, parse_constraints("accuracy>=0.95,latency_ms<=1.5"))
    assert chosen.best is None
    # "big" misses accuracy by ~2% but latency by 300%; "fast" misses accuracy by 7%: fast is nearest overall.
    assert ROWS[chosen.closest_row]["name"] == "fast"
    assert chosen.closest == Constraint("accuracy", ">=", 0.95)
    assert chosen.closest_gap == pytest.approx((0.95 - 0.88) / 0.95)
    assert "No variant meets" in chosen.message and "fast" in chosen.message and "accuracy>=0.95" in chosen.message


def test_whitespace_around_terms_is_ignored_but_not_inside_a_number() -> None:
    # A trailing newline (a shell heredoc, a pasted line) is surrounding whitespace, like spaces.
    assert parse_constraints("latency_ms<=5\n") == [Constraint("latency_ms", "<=", 5.0)]
    assert parse_constraints("\tlatency_ms <=\n5 ,accuracy>=0.9\n") == [
        Constraint("latency_ms", "<=", 5.0), Constraint("accuracy", ">=", 0.9)]
    for text in ("latency_ms<=5\nx", "latency_ms<=5 5", "latency_ms<=5\n\naccuracy>=0.9"):
        with pytest.raises(ConfigError, match="Cannot parse the constraint"):
            parse_constraints(text)

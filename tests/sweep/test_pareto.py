"""Pareto fronts on points whose front is known by hand."""

from __future__ import annotations

import pytest

from pipeline.sweep.pareto import dominates, pareto_front

POINTS = [
    {"name": "a", "accuracy": 0.90, "latency_ms": 1.0},  # fastest: on the front
    {"name": "b", "accuracy": 0.92, "latency_ms": 2.0},  # on the front
    {"name": "c", "accuracy": 0.91, "latency_ms": 3.0},  # dominated by b
    {"name": "d", "accuracy": 0.95, "latency_ms": 5.0},  # most accurate: on the front
    {"name": "e", "accuracy": 0.95, "latency_ms": 6.0},  # dominated by d (same accuracy, slower)
    {"name": "f", "accuracy": None, "latency_ms": 0.5},  # unmeasured: never on the front
]


def test_front_of_known_points_is_ordered_by_cost() -> None:
    front = pareto_front(POINTS, maximize=("accuracy",), minimize=("latency_ms",))
    assert [POINTS[i]["name"] for i in front] == ["a", "b", "d"]


def test_duplicates_are_both_kept_and_single_point_is_its_own_front() -> None:
    twins = [{"accuracy": 0.9, "size_kb": 10.0}, {"accuracy": 0.9, "size_kb": 10.0}]
    assert pareto_front(twins, maximize=("accuracy",), minimize=("size_kb",)) == [0, 1]
    assert pareto_front(twins[:1], maximize=("accuracy",), minimize=("size_kb",)) == [0]


def test_three_objectives() -> None:
    pts = [
        {"accuracy": 0.9, "latency_ms": 1.0, "size_kb": 50.0},
        {"accuracy": 0.9, "latency_ms": 1.0, "size_kb": 40.0},  # dominates the first
        {"accuracy": 0.8, "latency_ms": 0.5, "size_kb": 60.0},  # faster: stays
    ]
    assert sorted(pareto_front(pts, maximize=("accuracy",), minimize=("latency_ms", "size_kb"))) == [1, 2]


def test_dominates_needs_strictly_better_somewhere() -> None:
    a = {"accuracy": 0.9, "latency_ms": 1.0}
    assert not dominates(a, dict(a), ("accuracy",), ("latency_ms",))
    assert dominates(a, {"accuracy": 0.9, "latency_ms": 1.5}, ("accuracy",), ("latency_ms",))


def test_needs_an_objective() -> None:
    with pytest.raises(ValueError):
        pareto_front(POINTS)

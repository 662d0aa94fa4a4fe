"""Change points in nightly medians: known synthetic series, false alarms on noise, creep, bad history."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.farm.changepoints import (
    ChangePoint,
    as_dicts,
    detect_change_points,
    device_change_points,
    min_points,
)
from pipeline.farm.store import ResultsStore
from tests.helpers.records import latency_samples, make_record

NOISE = 0.01  # 1 % night-to-night noise (log space)


def noisy(seed: int, n: int, level: float = 12.0) -> np.ndarray:
    """``n`` nightly medians around ``level`` ms with 1 % multiplicative noise."""
    return level * np.exp(np.random.default_rng(seed).normal(0.0, NOISE, n))


def creeping(seed: int, stable: int, creep_nights: int, per_night: float = 0.02) -> np.ndarray:
    series = noisy(seed, stable + creep_nights)
    series[stable:] *= (1 + per_night) ** np.arange(1, creep_nights + 1)
    return series


def first_flagging_night(seed: int, stable: int = 15, per_night: float = 0.02, nights: int = 14) -> int | None:
    """The creeping night (1-based) on which the series so far first shows a raised level."""
    for k in range(1, nights + 1):
        points = detect_change_points(creeping(seed, stable, k, per_night))
        if any(p.ratio > 1 and p.index >= stable - 2 for p in points):
            return k
    return None


@pytest.mark.parametrize("seed", range(20))
def test_one_step_up_of_ten_percent_is_found_where_it_is(seed: int) -> None:
    series = noisy(seed, 40)
    series[20:] *= 1.10
    points = detect_change_points(series)
    assert len(points) == 1, points
    (point,) = points
    assert abs(point.index - 20) <= 1
    assert point.kind == "step" and point.slower
    assert point.ratio == pytest.approx(1.10, abs=0.02)
    assert point.before == pytest.approx(12.0, rel=0.02) and point.after == pytest.approx(13.2, rel=0.02)
    assert point.ratio == pytest.approx(point.after / point.before)


@pytest.mark.parametrize("seed", range(10))
def test_two_steps_up_then_down_are_both_found(seed: int) -> None:
    series = noisy(100 + seed, 45)
    series[15:] *= 1.08
    series[30:] *= 0.90
    points = detect_change_points(series)
    assert [p.index for p in points] in ([15, 30], [14, 30], [16, 30], [15, 29], [15, 31])
    up, down = points
    assert up.ratio == pytest.approx(1.08, abs=0.02) and down.ratio == pytest.approx(0.90, abs=0.02)
    assert down.before == pytest.approx(up.after)


@pytest.mark.parametrize(
    "min_step, allowed",
    [
        (0.03, 0.02),  # as the gate runs it; measured 0/200
        (0.005, 0.06),  # the penalty alone has to hold the line; measured 7/200
    ],
)
def test_false_alarm_rate_on_stable_noisy_series_is_low(min_step: float, allowed: float) -> None:
    alarms = 0
    for seed in range(200):
        n = int(np.random.default_rng(10_000 + seed).integers(20, 61))
        alarms += bool(detect_change_points(noisy(10_000 + seed, n), min_step=min_step))
    assert alarms / 200 <= allowed


def test_one_slow_night_is_not_a_change_point() -> None:
    series = noisy(7, 30)
    series[18] *= 1.5
    assert detect_change_points(series) == []


def test_a_step_smaller_than_min_step_is_not_reported() -> None:
    series = 12.0 * np.exp(np.random.default_rng(3).normal(0.0, 0.002, 40))
    series[20:] *= 1.02  # clear in 0.2 % noise, but under the 3 % floor
    assert detect_change_points(series) == []
    found = detect_change_points(series, min_step=0.01)
    assert [p.index for p in found] == [20]


@pytest.mark.parametrize("seed", range(12))
def test_two_percent_a_night_creep_is_flagged_within_seven_nights(seed: int) -> None:
    night = first_flagging_night(500 + seed)
    assert night is not None and night <= 7, night


def test_creep_is_flagged_by_the_trend_check_when_steps_cannot_see_it() -> None:
    # a prohibitive penalty keeps PELT from splitting the series at all; only the trend check is left
    series = creeping(42, 15, 7)
    points = detect_change_points(series, sensitivity=1e6)
    assert [p.kind for p in points] == ["trend"]
    (trend,) = points
    assert trend.index == len(series) - 7 and trend.ratio > 1.08
    assert detect_change_points(series, sensitivity=1e6, trend_window=0) == []


def test_a_flat_series_with_rounding_has_no_change_points() -> None:
    assert detect_change_points([12.0] * 30) == []
    assert detect_change_points([12.0, 12.000001] * 15) == []


def test_short_series_have_no_change_points_and_bad_values_raise() -> None:
    assert detect_change_points([]) == []
    assert detect_change_points([12.0, 13.2, 13.2]) == []
    for bad in ([12.0] * 10 + [math.nan], [12.0] * 10 + [0.0], [12.0] * 10 + [-1.0]):
        with pytest.raises(ValueError, match="finite and positive"):
            detect_change_points(bad)


# -------------------------------------------------------------------------------- the store part


class FakeResult:
    def __init__(self, rid: int, p50: object) -> None:
        self.id, self.run_id, self.p50, self.bundle_id = rid, 100 + rid, p50, "b0"


class FakeStore:
    def __init__(self, values=(), error: Exception | None = None) -> None:
        self.values, self.error, self.calls = list(values), error, []

    def history(self, device, profile_name, limit, **kwargs):
        self.calls.append((device, profile_name, limit, kwargs))
        if self.error:
            raise self.error
        return [FakeResult(i + 1, v) for i, v in enumerate(self.values)]


@pytest.mark.parametrize(
    "values, expected",
    [
        ([], r"0 comparable results, 10 needed"),
        ([12.0] * 5, r"5 comparable results, 10 needed"),
        ([12.0] * 20 + [math.nan], r"1 of 21 results have no usable median .*result ids 21"),
        ([12.0] * 20 + [None, 0.0], r"2 of 22 results have no usable median .*result ids 21, 22"),
        ([12.0] * 20 + [-3.0], r"no usable median"),
    ],
)
def test_bad_or_short_history_gives_a_message_not_an_exception(values, expected) -> None:
    report = device_change_points(FakeStore(values), "rpi4-a", "default")
    assert report.points == [] and as_dicts(report) == []
    assert "device rpi4-a, profile default" in report.message
    assert re.search(expected, report.message), report.message


def test_a_store_that_cannot_be_read_gives_a_message() -> None:
    report = device_change_points(FakeStore(error=OSError("disk I/O error")), "rpi4-b", "fast")
    assert report.points == [] and report.values == []
    assert "device rpi4-b, profile fast" in report.message and "disk I/O error" in report.message


def test_window_and_filters_reach_the_store() -> None:
    store = FakeStore(noisy(1, 30))
    report = device_change_points(store, "rpi4-a", "default", window=25, emulated=True, before_result_id=99)
    assert store.calls == [("rpi4-a", "default", 25, {"emulated": True, "before_result_id": 99})]
    assert report.message is None and report.points == []


def test_a_missing_detector_library_gives_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_ruptures(name, *args, **kwargs):
        if name == "ruptures":
            raise ImportError("No module named 'ruptures'", name="ruptures")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ruptures)
    report = device_change_points(FakeStore(noisy(1, 30)), "rpi4-a", "default")
    assert report.points == [] and "ruptures is not installed" in report.message
    assert "device rpi4-a, profile default" in report.message


def test_step_up_in_a_real_sqlite_store(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "results.sqlite") as store:
        medians = list(noisy(11, 24, level=10.0))
        for night in range(24):
            factor = 1.12 if night >= 16 else 1.0
            run_id = store.start_run("farm", "farm.yaml", "default")
            samples = latency_samples(night, n=60, median_ms=medians[night] * factor, sigma=0.01, spike_rate=0.0)
            store.record_result(run_id, "rpi4-a", "rpi4", "default", "ok", make_record(samples), None)
            # another device's and a failed result in the same runs must not enter the series
            store.record_result(run_id, "rpi4-b", "rpi4", "default", "ok", make_record(latency_samples(night, n=60)), None)
            store.record_result(run_id, "rpi4-a", "rpi4", "default", "unreachable", None, None, error="down")
            store.finish_run(run_id)
        report = device_change_points(store, "rpi4-a", "default")
        history = store.history("rpi4-a", "default", 60)
    assert report.message is None
    assert report.result_ids == [r.id for r in history] and len(report.values) == 24
    assert [p.index for p in report.points] == [16]
    assert report.bundle_ids == [r.bundle_id for r in history]
    (point,) = as_dicts(report)
    assert point["result_id"] == history[16].id and point["run_id"] == history[16].run_id
    assert set(point) == {"index", "result_id", "run_id", "before", "after", "ratio"}
    assert point["ratio"] == pytest.approx(1.12, abs=0.03)
    assert isinstance(report.points[0], ChangePoint) and min_points() == 10

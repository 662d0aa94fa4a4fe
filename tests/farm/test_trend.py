"""Change points in the nightly history reach the verdict, flagged only for a model that got slower."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.farm.policy import Policy
from pipeline.farm.regression import check_result
from pipeline.farm.store import ResultsStore
from tests.helpers.records import latency_samples, make_record

# the default policy at a fixed 5 % effect (these results have no A/B, so the stored check decides latency)
NO_NOISE = Policy(min_effect=0.05)


@pytest.fixture
def store(tmp_path: Path):
    with ResultsStore(tmp_path / "results.sqlite") as s:
        yield s


def _nights(store: ResultsStore, levels: list[float], bundles: list[str], seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    ids = []
    for i, (level, bundle) in enumerate(zip(levels, bundles)):
        run_id = store.start_run("farm")
        wobble = float(np.exp(rng.normal(0, 0.01)))
        samples = latency_samples(100 + i, n=60, sigma=0.01, spike_rate=0.0) / 12.0 * level * wobble
        ids.append(store.record_result(run_id, "pi-01", "rpi4", "default", "ok", make_record(samples, bundle_id=bundle), None))
        store.finish_run(run_id)
    return ids


def test_a_slower_model_after_the_baseline_is_flagged_as_a_latency_trend(store: ResultsStore) -> None:
    ids = _nights(store, [10.0] * 15 + [11.5] * 6, ["a" * 16] * 15 + ["b" * 16] * 6)
    store.accept_baseline(ids[0])
    verdict = check_result(store, ids[-1], policy=NO_NOISE)
    assert verdict.change_points, verdict.trend
    latest = verdict.change_points[-1]
    assert abs(latest["index"] - 15) <= 1 and latest["ratio"] == pytest.approx(1.15, rel=0.03)
    assert latest["flagged"] is True and latest["result_id"] in ids
    assert "latency-trend" in verdict.regressed_metrics() and verdict.status == "regression"


def test_the_same_bundle_getting_slower_is_the_device_not_the_model(store: ResultsStore) -> None:
    ids = _nights(store, [10.0] * 15 + [11.5] * 6, ["a" * 16] * 21)
    store.accept_baseline(ids[0])
    verdict = check_result(store, ids[-1], policy=NO_NOISE)
    assert verdict.change_points and verdict.change_points[-1]["flagged"] is False
    assert "ran on both sides" in verdict.trend
    assert "latency-trend" not in verdict.regressed_metrics()


def test_a_step_is_flagged_for_a_week_then_no_longer(store: ResultsStore) -> None:
    ids = _nights(store, [10.0] * 15 + [11.5] * 12, ["a" * 16] * 15 + ["b" * 16] * 12)
    store.accept_baseline(ids[17])  # accepted after the step: the stored check passes
    flagged = [check_result(store, rid, policy=NO_NOISE).trend_regressed for rid in ids[15:]]
    assert any(flagged[:7]), flagged  # seen within the step's first week
    assert flagged[-1] is False  # 12 nights on, it is old news
    last = check_result(store, ids[-1], policy=NO_NOISE)
    assert "results ago" in last.trend and last.status == "pass"


def test_a_short_history_gives_a_message_and_the_other_checks_go_on(store: ResultsStore) -> None:
    ids = _nights(store, [10.0, 10.0, 10.1], ["a" * 16] * 3)
    store.accept_baseline(ids[0])
    verdict = check_result(store, ids[-1], policy=NO_NOISE)
    assert verdict.status == "pass" and verdict.change_points == []
    assert "pi-01" in verdict.trend and "needed" in verdict.trend


def test_change_points_can_be_switched_off(store: ResultsStore) -> None:
    ids = _nights(store, [10.0] * 15 + [11.5] * 6, ["a" * 16] * 15 + ["b" * 16] * 6)
    store.accept_baseline(ids[0])
    verdict = check_result(store, ids[-1], policy=Policy(changepoints=False))
    assert verdict.change_points == [] and verdict.trend is None

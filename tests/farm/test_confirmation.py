"""Confirmation by A/B: the suspicion rule, the paired-block judgement, and how it decides verdicts in a real store."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from pipeline.farm.confirmation import judge_pairs, plan_confirmation, suspicion
from pipeline.farm.policy import DEFAULT_POLICY, Policy
from pipeline.farm.regression import EXIT_REGRESSION, check_result, exit_code, summarize
from pipeline.farm.stats import sign_test_greater
from pipeline.farm.store import ResultsStore
from pipeline.farm.verdicts import ConfirmationCheck
from tests.helpers.records import latency_samples, make_record

BUNDLE_A = "aaaaaaaaaaaaaaaa"
BUNDLE_B = "bbbbbbbbbbbbbbbb"


def _pairs(ratios: list[float], base: float = 1.0) -> list[tuple[float, float]]:
    return [(base, base * r) for r in ratios]


def test_sign_test_matches_the_binomial_tail() -> None:
    assert sign_test_greater(8, 8) == pytest.approx(1 / 256)
    assert sign_test_greater(7, 8) == pytest.approx(9 / 256)
    assert sign_test_greater(0, 8) == 1.0
    assert sign_test_greater(0, 0) == 1.0
    with pytest.raises(ValueError):
        sign_test_greater(9, 8)


def test_suspicion_needs_both_size_and_significance() -> None:
    base = latency_samples(1, n=200)
    assert suspicion(base, latency_samples(2, n=200), DEFAULT_POLICY) is None  # A/A
    why = suspicion(base, latency_samples(3, n=200) * 1.10, DEFAULT_POLICY)
    assert why is not None and "x1.1" in why
    # a 2.5 % shift is a suspicion (loose), though it is below min_effect (5 %)
    assert suspicion(base, base * 1.025, DEFAULT_POLICY) is not None
    # suspicion never needs more than min_effect, even if suspect_effect is set higher
    assert suspicion(base, base * 1.03, Policy(min_effect=0.02, suspect_effect=0.5)) is not None
    assert suspicion(base[:5], base[:5] * 2, DEFAULT_POLICY) is None  # too few samples


def test_a_consistent_ten_percent_slowdown_is_confirmed() -> None:
    rng = np.random.default_rng(0)
    ratios = list(1.10 * np.exp(rng.normal(0, 0.01, 8)))
    check = judge_pairs(_pairs(ratios), [1.0] * 50, [1.1] * 50, DEFAULT_POLICY, seconds=3.0, baseline_source="device")
    assert check.status == "confirmed", check.reason
    assert check.pairs == 8 and check.pairs_slower == 8 and check.p_sign == pytest.approx(1 / 256)
    assert check.ratio == pytest.approx(1.10, rel=0.02)
    assert check.baseline_source == "device" and check.seconds == 3.0


def test_same_model_in_both_arms_is_not_confirmed() -> None:
    rng = np.random.default_rng(1)
    check = judge_pairs(_pairs(list(np.exp(rng.normal(0, 0.02, 8)))), [1.0], [1.0], DEFAULT_POLICY)
    assert check.status == "not-confirmed"
    assert "did not confirm" in check.reason


def test_big_but_inconsistent_pairs_are_not_confirmed() -> None:
    # median ratio 1.2 but B faster in 3 of 8 pairs: the sign test does not reach p < 0.05
    check = judge_pairs(_pairs([1.3, 1.25, 1.2, 1.2, 1.2, 0.9, 0.9, 0.9]), [1.0], [1.2], DEFAULT_POLICY)
    assert check.ratio == pytest.approx(1.2)
    assert check.pairs_slower == 5 and check.status == "not-confirmed"


def test_a_throttled_session_is_invalid_and_a_short_one_unavailable() -> None:
    check = judge_pairs(_pairs([1.2] * 8), [1.0], [1.2], DEFAULT_POLICY, throttled=True, throttle_detail="block 3 (b): 0x4")
    assert check.status == "invalid" and "block 3" in check.reason
    short = judge_pairs(_pairs([1.2]), [1.0], [1.2], DEFAULT_POLICY)
    assert short.status == "unavailable" and "1 usable pairs" in short.reason


# -------------------------------------------------------------------- through the store


@pytest.fixture
def store(tmp_path: Path):
    with ResultsStore(tmp_path / "results.sqlite") as s:
        yield s


def _baselined(store: ResultsStore) -> int:
    run_id = store.start_run("farm")
    rid = store.record_result(run_id, "rpi4-a", "rpi4", "default", "ok",
                              make_record(latency_samples(1, n=200), bundle_id=BUNDLE_A), None)
    store.accept_baseline(rid)
    store.finish_run(run_id)
    return store.start_run("farm")


def _candidate(store: ResultsStore, run_id: int, scale: float, check: ConfirmationCheck | None) -> int:
    record = make_record(latency_samples(2, n=200) * scale, bundle_id=BUNDLE_B)
    ab = {"kind": "ab", "blocks": []}
    return store.record_result(run_id, "rpi4-a", "rpi4", "default", "ok", record, None,
                               confirmation=(asdict(check), ab) if check is not None else None)


def test_plan_reads_the_baseline_bundle_and_samples(store: ResultsStore) -> None:
    _baselined(store)
    plan = plan_confirmation(store, "rpi4-a", "rpi4", "default", False, DEFAULT_POLICY)
    assert plan is not None and plan.baseline_bundle_id == BUNDLE_A and len(plan.baseline_samples) == 200
    assert plan_confirmation(store, "rpi4-a", "rpi4", "default", False, Policy(confirm=False)) is None
    assert plan_confirmation(store, "other", None, "default", False, DEFAULT_POLICY) is None  # no baseline


def test_a_confirmed_ab_makes_a_latency_regression_and_both_comparisons_are_kept(store: ResultsStore) -> None:
    run_id = _baselined(store)
    confirmed = judge_pairs(_pairs([1.2] * 8), [1.0] * 10, [1.2] * 10, DEFAULT_POLICY, baseline_source="uploaded")
    verdict = check_result(store, _candidate(store, run_id, 1.2, confirmed))
    assert verdict.status == "regression" and verdict.regressed_metrics() == ["latency"]
    assert verdict.latency.status == "regression"  # the stored-baseline comparison is still there
    assert verdict.confirmation.status == "confirmed" and verdict.confirmation.baseline_source == "uploaded"
    assert any("confirmed by A/B" in r for r in verdict.reasons)
    assert verdict.policy["confirm"] is True and verdict.policy["ab_blocks"] == DEFAULT_POLICY.ab_blocks
    assert store.get_confirmation_record(verdict.result_id) == {"kind": "ab", "blocks": []}


def test_an_ab_that_disagrees_turns_a_stored_regression_into_a_pass_with_a_note(store: ResultsStore) -> None:
    run_id = _baselined(store)
    disagree = judge_pairs(_pairs([1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.01]), [1.0], [1.0], DEFAULT_POLICY)
    verdict = check_result(store, _candidate(store, run_id, 1.2, disagree))
    assert verdict.latency.status == "regression" and verdict.confirmation.status == "not-confirmed"
    assert verdict.status == "pass" and verdict.regressed_metrics() == []
    assert any("did not confirm" in n for n in verdict.notes)


def test_a_baseline_that_cannot_be_found_is_unconfirmed_never_passed(store: ResultsStore) -> None:
    run_id = _baselined(store)
    missing = ConfirmationCheck(status="unavailable", reason="baseline bundle missing: aaaa not on rpi4-a nor in results/bundles")
    verdict = check_result(store, _candidate(store, run_id, 1.2, missing))
    assert verdict.status == "unconfirmed"
    assert any("baseline bundle missing" in r for r in verdict.reasons)
    assert exit_code([verdict]) == EXIT_REGRESSION
    assert "1 unconfirmed" in summarize([verdict]).headline


def test_throttling_during_the_ab_marks_the_run_invalid(store: ResultsStore) -> None:
    run_id = _baselined(store)
    throttled = judge_pairs(_pairs([1.2] * 8), [1.0], [1.2], DEFAULT_POLICY, throttled=True, throttle_detail="pair 2 b: 0x4")
    verdict = check_result(store, _candidate(store, run_id, 1.2, throttled))
    assert verdict.status == "invalid" and "pair 2 b" in verdict.reasons[0]


def test_without_an_ab_the_stored_comparison_decides_and_says_so(store: ResultsStore) -> None:
    run_id = _baselined(store)
    verdict = check_result(store, _candidate(store, run_id, 1.2, None))
    assert verdict.status == "regression" and verdict.confirmation is None
    assert any("none was run" in n for n in verdict.notes)

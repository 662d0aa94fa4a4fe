"""Regression verdicts on synthetic latency-like samples and a real store (the statistics alone: test_stats.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.farm.regression import (
    EXIT_INFRASTRUCTURE,
    EXIT_OK,
    EXIT_REGRESSION,
    Policy,
    Verdict,
    check_latency,
    check_result,
    check_run,
    exit_code,
    learn_noise_floor,
    load_verdicts,
    summarize,
)
from pipeline.farm.store import ResultsStore
from tests.helpers.records import latency_samples, make_record

BUNDLE_A = "aaaaaaaaaaaaaaaa"
BUNDLE_B = "bbbbbbbbbbbbbbbb"


@pytest.fixture
def store(tmp_path: Path):
    with ResultsStore(tmp_path / "results.sqlite") as s:
        yield s


def add(store: ResultsStore, run_id: int, device: str, samples, *, status: str = "ok", device_class: str = "rpi4",
        error: str | None = None, **kwargs) -> int:
    record = make_record(samples, target=device, **kwargs) if samples is not None else None
    return store.record_result(run_id, device, device_class, "default", status, record, None, error=error)


def sizes(seed: int) -> tuple[int, int]:
    rng = np.random.default_rng(seed)
    return int(rng.integers(100, 301)), int(rng.integers(100, 301))


# ------------------------------------------------------------------ A/A and sensitivity


def test_aa_same_distribution_gives_at_most_one_false_regression() -> None:
    verdicts, mwu_alone = [], 0
    for seed in range(20):
        n_base, n_cand = sizes(seed)
        base = latency_samples(1000 + seed, n=n_base)
        cand = latency_samples(2000 + seed, n=n_cand)
        check, reasons = check_latency(base, cand)
        verdicts.append(check.status)
        mwu_alone += check.p_slower < 0.01
        assert 0.9 < check.ratio < 1.1
        assert check.threshold == 0.05
    assert verdicts.count("regression") <= 1, verdicts
    assert verdicts.count("improvement") <= 1, verdicts
    assert mwu_alone <= 2  # the rank test itself is calibrated (alpha = 1 %)


def test_genuine_20_percent_slowdown_is_flagged_for_every_seed() -> None:
    for seed in range(20):
        n_base, n_cand = sizes(seed)
        base = latency_samples(3000 + seed, n=n_base)
        cand = latency_samples(4000 + seed, n=n_cand) * 1.20
        check, reasons = check_latency(base, cand)
        assert check.status == "regression", (seed, check)
        assert check.p_slower < 0.01 and check.ci_low > 1.0 and check.ratio >= 1.05
        assert reasons and reasons[0].startswith("latency regression")
        assert "threshold 5.0%" in reasons[0]


def test_genuine_20_percent_speedup_is_an_improvement() -> None:
    base, cand = latency_samples(1, n=200), latency_samples(2, n=200) / 1.20
    check, reasons = check_latency(base, cand)
    assert check.status == "improvement" and "faster" in reasons[0]


def test_three_percent_slowdown_is_below_the_minimum_effect() -> None:
    flagged, significant = 0, 0
    for seed in range(20):
        n_base, n_cand = sizes(seed)
        base = latency_samples(5000 + seed, n=n_base)
        cand = latency_samples(6000 + seed, n=n_cand) * 1.03
        check, _ = check_latency(base, cand)
        flagged += check.status == "regression"
        significant += check.p_slower < 0.01
    assert flagged <= 1
    # not for lack of power: the rank test sees most of these shifts, the 5 % effect gate stops them
    assert significant >= 10
    # and lowering the minimum effect makes the same data a regression
    base, cand = latency_samples(7000, n=300), latency_samples(7001, n=300) * 1.03
    assert check_latency(base, cand)[0].status == "pass"
    assert check_latency(base, cand, policy=Policy(min_effect=0.01))[0].status == "regression"


def test_too_few_samples_are_not_compared() -> None:
    check, reasons = check_latency(latency_samples(1, n=5), latency_samples(2, n=200) * 2)
    assert check.status == "not-compared" and "need 10" in reasons[0]


# --------------------------------------------------------------------------- noise floor


def _nightly_history(store: ResultsStore, device: str, wobble: list[float], *, bundle: str = BUNDLE_A) -> list[int]:
    ids = []
    for night, factor in enumerate(wobble):
        run_id = store.start_run("farm")
        ids.append(add(store, run_id, device, latency_samples(100 * night + sum(map(ord, device)), n=200) * factor,
                       bundle_id=bundle))
        store.finish_run(run_id)
    return ids


def test_noise_floor_raises_the_threshold_for_a_noisy_device(store: ResultsStore) -> None:
    quiet = _nightly_history(store, "quiet", [1.0] * 8)  # only within-run sampling noise
    # unchanged bundle, nights 3-4 % apart (thermal state, background load): sd of night-to-night
    # log differences ~8 %, so 3 sd ~ 25 %
    noisy = _nightly_history(store, "noisy", [1.0, 1.04, 0.98, 1.03, 0.97, 1.035, 0.985, 1.025])
    store.accept_baseline(quiet[0])
    store.accept_baseline(noisy[0])
    run_id = store.start_run("farm")
    cand_quiet = add(store, run_id, "quiet", latency_samples(9001, n=200) * 1.08, bundle_id=BUNDLE_B)
    cand_noisy = add(store, run_id, "noisy", latency_samples(9002, n=200) * 1.08, bundle_id=BUNDLE_B)

    floor_quiet = learn_noise_floor(store, "quiet", "default", before_result_id=cand_quiet)
    floor_noisy = learn_noise_floor(store, "noisy", "default", before_result_id=cand_noisy)
    assert floor_quiet.floor < 0.05 < 0.15 < floor_noisy.floor < 0.35
    assert floor_noisy.n_runs == 8

    v_quiet = check_result(store, cand_quiet)
    v_noisy = check_result(store, cand_noisy)
    assert v_quiet.status == "regression" and v_quiet.latency.threshold == 0.05
    assert v_noisy.status == "pass", v_noisy.reasons
    assert v_noisy.latency.threshold == pytest.approx(floor_noisy.floor)
    assert v_noisy.latency.ratio > 1.05 and v_noisy.latency.p_slower < 0.01  # it *would* have been flagged
    assert any("noise floor" in note for note in v_noisy.notes)
    # a big enough slowdown still gets through the raised threshold
    big = add(store, run_id, "noisy", latency_samples(9003, n=200) * 1.45, bundle_id=BUNDLE_B)
    assert check_result(store, big).status == "regression"


def test_noise_floor_needs_enough_same_bundle_pairs(store: ResultsStore) -> None:
    ids = _nightly_history(store, "new", [1.0, 1.1, 0.9])  # 2 pairs
    assert learn_noise_floor(store, "new", "default") is None
    ids += _nightly_history(store, "new", [1.0, 1.1], bundle=BUNDLE_B)  # 1 more pair, 1 bundle change
    assert learn_noise_floor(store, "new", "default") is None
    _nightly_history(store, "new", [1.0], bundle=BUNDLE_B)
    floor = learn_noise_floor(store, "new", "default", save=True)
    assert floor is not None and store.noise_floor("new", "default").floor == floor.floor


# ---------------------------------------------------------------------- accuracy, memory


@pytest.fixture
def baselined(store: ResultsStore):
    """A store with an accepted baseline for rpi4-a (top1 0.870, agreement 0.995, 48.5 MB)."""
    run_id = store.start_run("farm")
    store.accept_baseline(add(store, run_id, "rpi4-a", latency_samples(1, n=200), bundle_id=BUNDLE_A))
    store.finish_run(run_id)
    return store, store.start_run("farm")


def _candidate(store, run_id, **kwargs):
    return check_result(store, add(store, run_id, "rpi4-a", latency_samples(2, n=200), bundle_id=BUNDLE_B, **kwargs))


def test_unchanged_candidate_passes(baselined) -> None:
    store, run_id = baselined
    verdict = _candidate(store, run_id)
    assert verdict.status == "pass" and verdict.reasons == []
    assert verdict.latency.status == verdict.accuracy.status == verdict.memory.status == "pass"
    assert verdict.baseline_key == "rpi4-a" and verdict.baseline_bundle_id == BUNDLE_A


def test_top1_drop_beyond_half_a_point_is_flagged(baselined) -> None:
    store, run_id = baselined
    at_limit = _candidate(store, run_id, top1=0.865)  # exactly 0.5 points: allowed
    assert at_limit.status == "pass" and at_limit.accuracy.top1_delta == pytest.approx(-0.005)
    dropped = _candidate(store, run_id, top1=0.86)
    assert dropped.status == "regression" and dropped.accuracy.status == "regression"
    assert dropped.accuracy.top1_delta == pytest.approx(-0.01)
    assert any(r.startswith("accuracy regression") and "-1.00 points" in r for r in dropped.reasons)
    assert dropped.latency.status == "pass"  # only accuracy regressed


def test_agreement_drop_is_flagged(baselined) -> None:
    store, run_id = baselined
    verdict = _candidate(store, run_id, agreement=0.99)
    assert verdict.status == "regression"
    assert any(r.startswith("agreement regression") for r in verdict.reasons)
    tolerant = check_result(store, verdict.result_id, policy=Policy(agreement_tolerance=0.01))
    assert tolerant.status == "pass"
    assert _candidate(store, run_id, agreement=None).accuracy.agreement_delta is None


def test_memory_growth_beyond_max_5_percent_or_2_mb_is_flagged(baselined) -> None:
    store, run_id = baselined
    assert _candidate(store, run_id, peak_rss_mb=50.5).status == "pass"  # +2.0 MB < max(2.43, 2)
    grown = _candidate(store, run_id, peak_rss_mb=51.5)  # +3.0 MB
    assert grown.status == "regression" and grown.memory.delta_mb == pytest.approx(3.0)
    assert grown.memory.threshold_mb == pytest.approx(48.5 * 0.05)
    assert any(r.startswith("memory regression") for r in grown.reasons)
    assert _candidate(store, run_id, peak_rss_mb=40.0).status == "improvement"


def test_memory_threshold_is_at_least_2_mb_for_small_processes(store: ResultsStore) -> None:
    run_id = store.start_run("farm")
    store.accept_baseline(add(store, run_id, "tiny", latency_samples(1), peak_rss_mb=20.0))
    assert check_result(store, add(store, run_id, "tiny", latency_samples(2), peak_rss_mb=21.9)).status == "pass"
    assert check_result(store, add(store, run_id, "tiny", latency_samples(2), peak_rss_mb=22.5)).status == "regression"


# ------------------------------------------------------------- not comparable, exit codes


def test_throttled_run_is_invalid_not_compared(baselined) -> None:
    store, run_id = baselined
    rid = add(store, run_id, "rpi4-a", latency_samples(3, n=200) * 1.5, bundle_id=BUNDLE_B, throttled=0x4)
    verdict = check_result(store, rid)
    assert verdict.status == "invalid" and verdict.latency is None
    assert "throttled" in verdict.reasons[0]


def test_no_baseline(store: ResultsStore) -> None:
    run_id = store.start_run("farm")
    verdict = check_result(store, add(store, run_id, "fresh", latency_samples(1)))
    assert verdict.status == "no-baseline" and verdict.latency is None
    assert "accept one" in verdict.reasons[0]


def test_emulated_runs_are_only_compared_with_emulated_baselines(store: ResultsStore) -> None:
    run_id = store.start_run("farm")
    store.accept_baseline(add(store, run_id, "rpi4-a", latency_samples(1)), device_key="rpi4")
    emu = add(store, run_id, "qemu-pi", latency_samples(2) * 30, emulated=True)  # emulation is slow
    verdict = check_result(store, emu)
    assert verdict.status == "no-baseline" and verdict.emulated
    assert any("never compared" in r for r in verdict.reasons)
    store.accept_baseline(add(store, run_id, "qemu-pi", latency_samples(3) * 30, emulated=True))
    verdict = check_result(store, emu)
    assert verdict.status == "pass" and verdict.baseline_key == "qemu-pi" and verdict.emulated
    assert verdict.latency.ratio == pytest.approx(1.0, abs=0.05)
    # and a hardware device of that class still gets the hardware class baseline
    assert check_result(store, add(store, run_id, "rpi4-b", latency_samples(4))).baseline_key == "rpi4"


def test_check_run_summary_and_saved_verdicts(store: ResultsStore) -> None:
    base_run = store.start_run("farm")
    for dev in ("a", "b", "c"):
        add(store, base_run, dev, latency_samples(ord(dev)))
    store.accept_run_baselines(base_run)
    store.finish_run(base_run)

    run_id = store.start_run("farm")
    add(store, run_id, "a", latency_samples(10))
    add(store, run_id, "b", None, status="unreachable", error="ssh: connection refused")
    add(store, run_id, "b", latency_samples(11))  # the runner's retry succeeded: supersedes
    add(store, run_id, "c", None, status="timeout", error="agent did not finish in 600 s")
    add(store, run_id, "d", latency_samples(12))
    store.finish_run(run_id)

    verdicts = check_run(store, run_id)
    by_device = {v.device: v for v in verdicts}
    assert {d: v.status for d, v in by_device.items()} == {"a": "pass", "b": "pass", "c": "failed", "d": "no-baseline"}
    assert "timed out" in by_device["c"].reasons[0]
    summary = summarize(verdicts)
    assert summary.exit_code == EXIT_INFRASTRUCTURE and summary.counts["failed"] == 1 and summary.total == 4
    assert "1 failed" in summary.headline

    # saved with the run: later baseline changes do not rewrite what was decided
    store.accept_baseline(by_device["a"].result_id, force=True)
    loaded = load_verdicts(store, run_id)
    assert [v.to_dict() for v in loaded] == [v.to_dict() for v in verdicts]
    assert isinstance(loaded[0], Verdict) and loaded[0].latency.ratio == verdicts[0].latency.ratio


@pytest.mark.parametrize(
    "statuses, code",
    [
        ([], EXIT_OK),
        (["pass", "improvement", "no-baseline", "invalid"], EXIT_OK),
        (["pass", "regression"], EXIT_REGRESSION),
        (["regression", "unreachable", "failed"], EXIT_REGRESSION),
        (["pass", "unreachable"], EXIT_INFRASTRUCTURE),
        (["failed", "no-baseline"], EXIT_INFRASTRUCTURE),
    ],
)
def test_exit_code_rules(statuses: list[str], code: int) -> None:
    verdicts = [Verdict(device=f"d{i}", profile_name="default", status=s) for i, s in enumerate(statuses)]
    assert exit_code(verdicts) == code
    assert summarize(verdicts).exit_code == code


def test_summary_line_names_the_metric_that_regressed(baselined) -> None:
    """A run flagged only for memory says so in the headline, not just "regression"."""
    store, run_id = baselined
    grown = _candidate(store, run_id, peak_rss_mb=51.5)  # memory only: latency and top-1 as the baseline
    assert grown.status == "regression" and grown.regressed_metrics() == ["memory"]
    assert summarize([grown]).headline == "1 regression (memory)"
    passed = _candidate(store, run_id, peak_rss_mb=48.5)
    both = summarize([grown, _candidate(store, run_id, peak_rss_mb=52.0), passed])
    assert both.headline == "1 pass, 2 regression (memory 2)" and both.regressed == {"memory": 2}
    assert Verdict.from_dict(grown.to_dict()).regressed_metrics() == ["memory"]  # also for saved verdicts

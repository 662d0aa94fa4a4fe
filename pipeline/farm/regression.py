"""Decide, per device and build profile, whether a run regressed against its accepted baseline.

Latency
-------
A latency regression needs all three of:

1. **Significance, rank test**: a one-sided Mann-Whitney U test (candidate slower than baseline)
   with p < ``alpha`` (default 0.01). Normal approximation with tie correction and continuity
   correction; with the 100+ samples a profile run takes, the approximation is accurate.
2. **Significance, medians**: the bootstrap ``ci_level`` (95 %) percentile interval of
   median(candidate) / median(baseline) lies entirely above 1 (``n_bootstrap`` = 2000 resamples of
   each side independently, fixed ``seed`` so the same data always gives the same report).
3. **Size**: the ratio of medians is at least ``1 + threshold`` where
   ``threshold = max(min_effect, noise_floor)``; ``min_effect`` defaults to 5 %.

Why both significance and size: samples within one run are not independent draws of the
run-to-run distribution (the device's thermal state, background load and memory layout persist for
the whole run), so with hundreds of samples the tests call even a 1 % run-to-run wobble
"significant". The tests guard against declaring noise in a short or very noisy run a
regression; the effect size, raised by the learnt noise floor, guards against the run-to-run
variation the tests cannot see. An improvement is the mirror image (p < alpha for "faster", the
interval entirely below 1, ratio <= 1 / (1 + threshold), symmetric in log space).

Noise floor
-----------
Learnt per (device, profile) from history: take the latest ``noise_window`` (30) valid results of
that device (hardware and emulated kept apart) and, for every pair of *consecutive* runs of the
*same bundle* (the model did not change, so any difference is the device and its environment),
d = |log(p50_next / p50_prev)|. With at least ``noise_min_pairs`` (4) such pairs::

    floor = exp(max(quantile_0.95(d), 3 * 1.4826 * median(d))) - 1

1.4826 * median(d) is a robust (MAD-style) estimate of the standard deviation of night-to-night
log differences, which is exactly the distribution of a candidate-vs-baseline difference when
nothing changed; 3 of them keep the per-device false-alarm rate from run-to-run noise around 0.1 %
per night instead of the 2.5 % a bare 95th percentile would give. The 95th percentile takes over
when the history is heavier-tailed than normal (and, with few pairs, is close to the maximum:
deliberately conservative). A device whose unchanged nights typically differ by 3 % (median d)
thus gets a threshold of about 14 % instead of 5 %; a steady board whose nights differ by 1 % stays
at the 5 % minimum. Only results stored before the candidate are used, so re-checking an old run
gives the same answer.

Measured behaviour (synthetic latency: lognormal sigma 0.08 plus 2 % scheduler spikes of 1.5-3x,
100-300 samples per side, 500 pairs per row, default policy, no noise floor)::

    true slowdown   0 %    3 %    5 %    7 %    10 %   20 %
    flagged         0 %    2.6 %  52 %   97 %   100 %  100 %
    (Mann-Whitney alone at alpha 0.01: 0.6 % of A/A pairs, 84 % of the 3 % slowdowns)

The size test uses the point estimate, so a true change at exactly ``min_effect`` is flagged about
half the time and a 3 % change occasionally when its estimate happens to land above 5 %.

Accuracy and memory
-------------------
* top-1 (on-device, over the bundle's eval subset) regresses when it drops by more than
  ``top1_drop`` (0.005 = 0.5 percentage points); it improves when it rises by more than that.
* agreement with the host's predictions regresses when it falls more than
  ``agreement_tolerance`` (default 0) below the baseline's: a quantized model that starts disagreeing
  with its own float/host reference on the device points at a runtime or conversion problem.
* peak RSS regresses when it grows by more than max(``memory_rel`` * baseline, ``memory_abs_mb``)
  = max(5 %, 2 MB): the relative part scales with big models, the absolute part keeps the
  allocator's few-MB jitter on small ones from raising alarms. It improves when it shrinks by as much.
* energy per inference (the agent's PMIC estimate above idle, mJ; only boards that can tell, a
  Raspberry Pi 5, have one) is compared like peak RSS, and only when both runs have an estimate:
  it regresses when it grows by more than max(``energy_rel`` * baseline, ``energy_abs_mj``) =
  max(10 %, 0.01 mJ), and improves when it shrinks by as much. The relative part is wider than
  memory's because the estimate subtracts two noisy board-power means; a run without an estimate
  (another board, an older agent, a baseline from before) is ``not-compared`` and says why.

Runs that are not comparable never pass or fail: throttled/too hot/malformed results are
``invalid``; a result without a baseline (or whose only baseline was measured under emulation while
it ran on hardware, or vice versa) is ``no-baseline``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from pipeline.deploy.record import ProfileRecord
from pipeline.farm.policy import DEFAULT_POLICY, Policy
from pipeline.farm.resource_checks import check_energy, check_memory
from pipeline.farm.rows import Baseline, NoiseFloor, Result
from pipeline.farm.trend import add_trend
from pipeline.farm.stats import bootstrap_median_ratio_ci, mann_whitney_u, noise_floor_from_medians
from pipeline.farm.store import ResultsStore
from pipeline.farm.verdicts import (
    STATUSES, THRESHOLD_SLACK, AccuracyCheck, ConfirmationCheck, LatencyCheck, Verdict,
)

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_INFRASTRUCTURE = 2




# ---------------------------------------------------------------------------------- verdicts


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def check_latency(
    baseline_samples: Sequence[float],
    candidate_samples: Sequence[float],
    *,
    policy: Policy = DEFAULT_POLICY,
    noise_floor: Optional[float] = None,
) -> tuple[LatencyCheck, list[str]]:
    """Latency verdict from the two raw sample sets (see module docstring); returns (check, reasons)."""
    base = np.asarray(baseline_samples, dtype=np.float64)
    cand = np.asarray(candidate_samples, dtype=np.float64)
    threshold = max(policy.min_effect, noise_floor or 0.0)
    check = LatencyCheck(
        status="not-compared", alpha=policy.alpha, threshold=threshold, min_effect=policy.min_effect,
        noise_floor=noise_floor, n_baseline=len(base), n_candidate=len(cand), ci_level=policy.ci_level,
    )
    if len(base) < policy.min_samples or len(cand) < policy.min_samples:
        return check, [
            f"latency not compared: {len(cand)} candidate / {len(base)} baseline samples, need {policy.min_samples} each"
        ]
    check.baseline_p50 = float(np.median(base))
    check.candidate_p50 = float(np.median(cand))
    if check.baseline_p50 <= 0:
        return check, ["latency not compared: baseline median is 0 ms"]
    check.ratio = check.candidate_p50 / check.baseline_p50
    _, check.p_slower = mann_whitney_u(cand, base, "greater")
    _, check.p_faster = mann_whitney_u(cand, base, "less")
    check.ci_low, check.ci_high = bootstrap_median_ratio_ci(
        base, cand, level=policy.ci_level, n_boot=policy.n_bootstrap, seed=policy.seed
    )
    basis = (
        f"p50 {check.candidate_p50:.3f} ms vs baseline {check.baseline_p50:.3f} ms "
        f"(x{check.ratio:.3f}, {int(policy.ci_level * 100)}% CI {check.ci_low:.3f}-{check.ci_high:.3f})"
    )
    floor_note = f", noise floor {_pct(noise_floor)}" if noise_floor else ""
    if (
        check.ratio >= 1.0 + threshold - THRESHOLD_SLACK
        and check.p_slower < policy.alpha
        and check.ci_low > 1.0
    ):
        check.status = "regression"
        return check, [
            f"latency regression: {basis}, {_pct(check.ratio - 1)} slower >= threshold {_pct(threshold)}"
            f"{floor_note}; Mann-Whitney p={check.p_slower:.2g} < {policy.alpha}"
        ]
    if (
        check.ratio <= 1.0 / (1.0 + threshold) + THRESHOLD_SLACK
        and check.p_faster < policy.alpha
        and check.ci_high < 1.0
    ):
        check.status = "improvement"
        return check, [f"latency improvement: {basis}, {_pct(1 - check.ratio)} faster; Mann-Whitney p={check.p_faster:.2g}"]
    check.status = "pass"
    return check, []


def check_accuracy(baseline: Result, candidate: Result, *, policy: Policy = DEFAULT_POLICY) -> tuple[AccuracyCheck, list[str]]:
    check = AccuracyCheck(
        status="not-compared", baseline_top1=baseline.top1, candidate_top1=candidate.top1,
        top1_threshold=policy.top1_drop, baseline_agreement=baseline.agreement,
        candidate_agreement=candidate.agreement, agreement_tolerance=policy.agreement_tolerance,
    )
    reasons: list[str] = []
    regressed = improved = compared = False
    if baseline.top1 is not None and candidate.top1 is not None:
        compared = True
        check.top1_delta = candidate.top1 - baseline.top1
        if check.top1_regressed:
            regressed = True
            reasons.append(
                f"accuracy regression: on-device top-1 {candidate.top1 * 100:.2f}% vs baseline "
                f"{baseline.top1 * 100:.2f}% ({check.top1_delta * 100:+.2f} points, allowed drop "
                f"{policy.top1_drop * 100:.2f})"
            )
        elif check.top1_improved:
            improved = True
            reasons.append(f"accuracy improvement: top-1 {check.top1_delta * 100:+.2f} points")
    if baseline.agreement is not None and candidate.agreement is not None:
        compared = True
        check.agreement_delta = candidate.agreement - baseline.agreement
        if check.agreement_regressed:
            regressed = True
            reasons.append(
                f"agreement regression: device agrees with host predictions on {candidate.agreement * 100:.2f}% "
                f"vs baseline {baseline.agreement * 100:.2f}% ({check.agreement_delta * 100:+.2f} points, "
                f"tolerance {policy.agreement_tolerance * 100:.2f})"
            )
    check.status = "regression" if regressed else "improvement" if improved else "pass" if compared else "not-compared"
    return check, reasons


def _runtime_notes(baseline: Result, candidate: Result) -> list[str]:
    notes = []
    b_rec, c_rec = baseline.record or ProfileRecord(raw={}), candidate.record or ProfileRecord(raw={})
    for key, before, now in b_rec.runtime.differences(c_rec.runtime):
        notes.append(f"runtime {key} changed: baseline {before!r}, now {now!r}")
    if b_rec.accuracy.count != c_rec.accuracy.count:
        notes.append(f"eval subset size differs: baseline {b_rec.accuracy.count}, now {c_rec.accuracy.count}")
    return notes


def compare(
    candidate: Result,
    candidate_samples: Sequence[float],
    baseline: Optional[Baseline],
    baseline_samples: Sequence[float],
    *,
    policy: Policy = DEFAULT_POLICY,
    noise_floor: Optional[float] = None,
    confirmation: Optional[ConfirmationCheck] = None,
) -> Verdict:
    """Verdict for one stored result against its baseline (pure: no store access).

    ``confirmation`` is the device's A/B for this result, when one ran: it then decides latency."""
    verdict = Verdict(
        device=candidate.device, profile_name=candidate.profile_name, status="pass",
        device_class=candidate.device_class, run_id=candidate.run_id, result_id=candidate.id,
        bundle_id=candidate.bundle_id, emulated=candidate.emulated, p50=candidate.p50, top1=candidate.top1,
        peak_rss_mb=candidate.peak_rss_mb, energy_mj_per_inference=candidate.energy_mj_per_inference,
        policy=policy.to_dict(),
    )
    if candidate.status == "unreachable":
        verdict.status = "unreachable"
        verdict.reasons.append(f"device unreachable: {candidate.error or 'no detail'}")
        return verdict
    if candidate.status == "busy":
        verdict.status = "busy"
        verdict.reasons.append(f"not measured, labgrid place busy: {candidate.error or 'no detail'}")
        return verdict
    if candidate.status in ("failed", "timeout"):
        verdict.status = "failed"
        what = "timed out" if candidate.status == "timeout" else "failed"
        verdict.reasons.append(f"profiling {what}: {candidate.error or 'no detail'}")
        return verdict
    if candidate.status == "invalid":
        verdict.status = "invalid"
        verdict.reasons.append(f"not compared, measurement invalid: {candidate.error or 'no detail'}")
        return verdict
    if baseline is None:
        verdict.status = "no-baseline"
        verdict.reasons.append(
            f"no {'emulated ' if candidate.emulated else ''}baseline for {candidate.device}"
            f"{' or class ' + candidate.device_class if candidate.device_class else ''} / {candidate.profile_name}; "
            "accept one to start comparing"
        )
        return verdict
    if baseline.result.emulated != candidate.emulated:  # callers should not pass one, but never compare them
        verdict.status = "no-baseline"
        verdict.reasons.append("the only baseline was measured under different emulation; emulated and hardware runs are never compared")
        return verdict
    base = baseline.result
    verdict.baseline_key = baseline.device_key
    verdict.baseline_result_id = base.id
    verdict.baseline_bundle_id = base.bundle_id
    verdict.latency, lat_reasons = check_latency(baseline_samples, candidate_samples, policy=policy, noise_floor=noise_floor)
    verdict.accuracy, acc_reasons = check_accuracy(base, candidate, policy=policy)
    verdict.memory, mem_reasons = check_memory(base, candidate, policy=policy)
    verdict.energy, energy_reasons = check_energy(base, candidate, policy=policy)
    verdict.notes = _runtime_notes(base, candidate)
    if verdict.energy.reason and (base.energy_mj_per_inference is not None or candidate.energy_mj_per_inference is not None):
        verdict.notes.append(f"energy not compared: {verdict.energy.reason}")  # one side has it: say why not
    if confirmation is not None:
        verdict.confirmation = confirmation
        lat_reasons = _confirmed_latency(verdict.latency, confirmation, lat_reasons, verdict.notes)
        if confirmation.status == "invalid":
            verdict.status = "invalid"
            verdict.reasons = [f"not compared, measurement invalid: {confirmation.reason}"]
            return verdict
    elif verdict.latency.status == "regression" and policy.confirm:
        verdict.notes.append("latency regression not confirmed by an A/B: none was run for this result")
    others = (verdict.accuracy.status, verdict.memory.status, verdict.energy.status)
    regressed = verdict.latency_regressed or "regression" in others
    if regressed:
        verdict.status = "regression"
    elif confirmation is not None and confirmation.status == "unavailable":
        verdict.status = "unconfirmed"
    elif "improvement" in (verdict.latency.status, *others):
        verdict.status = "improvement"
    verdict.reasons = lat_reasons + acc_reasons + mem_reasons + energy_reasons
    return verdict


def _confirmed_latency(
    latency: LatencyCheck, confirmation: ConfirmationCheck, reasons: list[str], notes: list[str]
) -> list[str]:
    """The latency reasons once the A/B has spoken: the stored-baseline comparison becomes a note
    unless the A/B confirmed it, and the A/B's own basis is always given."""
    stored = reasons[0] if reasons else f"stored-baseline comparison: p50 x{latency.ratio or float('nan'):.3f} ({latency.status})"
    if confirmation.status == "confirmed":
        return [f"latency regression confirmed by A/B on the device: {confirmation.reason}; {stored}"]
    if confirmation.status == "unavailable":
        return [f"latency suspected but unconfirmed: {confirmation.reason}; {stored}"]
    if confirmation.status == "not-confirmed":
        notes.append(f"latency suspected by the stored baseline ({stored}) but {confirmation.reason}")
        return [r for r in reasons if not r.startswith("latency regression")]
    return reasons


# --------------------------------------------------------------------------- store-level checks


def learn_noise_floor(
    store: ResultsStore,
    device: str,
    profile_name: str,
    *,
    before_result_id: Optional[int] = None,
    emulated: Optional[bool] = None,
    policy: Policy = DEFAULT_POLICY,
    save: bool = False,
) -> Optional[NoiseFloor]:
    """The device's run-to-run noise floor from its history (see module docstring), or None when
    there are fewer than ``policy.noise_min_pairs`` same-bundle consecutive pairs. ``save`` writes
    it to the store's noise table."""
    history = store.history(device, profile_name, policy.noise_window, before_result_id=before_result_id, emulated=emulated)
    floor, pairs, runs = noise_floor_from_medians(
        [r.p50 for r in history], [r.bundle_id for r in history], policy.noise_quantile, policy.noise_mad_k
    )
    if floor is None or pairs < policy.noise_min_pairs:
        return None
    if save:
        return store.set_noise_floor(device, profile_name, floor, runs)
    return NoiseFloor(device, profile_name, floor, runs, "")


def check_result(
    store: ResultsStore, result: Union[int, Result], *, policy: Policy = DEFAULT_POLICY, save_noise: bool = False
) -> Verdict:
    """Verdict for one stored result: finds its baseline (device, then class, same emulation) and
    its device's noise floor, then :func:`compare`."""
    if isinstance(result, int):
        result = store.get_result(result)
    if result.status != "ok" or not result.profile_name:
        return compare(result, [], None, [], policy=policy)
    baseline = store.baseline(result.device, result.device_class, result.profile_name, emulated=result.emulated)
    if baseline is None:
        verdict = compare(result, [], None, [], policy=policy)
        other = store.baseline(result.device, result.device_class, result.profile_name)
        if other is not None:
            kind = "emulated" if other.result.emulated else "hardware"
            verdict.reasons.append(
                f"the baseline for {other.device_key}/{other.profile_name} was measured on {kind}; "
                "emulated and hardware runs are never compared"
            )
        return verdict
    floor = learn_noise_floor(
        store, result.device, result.profile_name, before_result_id=result.id, emulated=result.emulated,
        policy=policy, save=save_noise,
    )
    saved = store.get_confirmation(result.id)
    verdict = compare(
        result, store.get_samples(result.id), baseline, store.get_samples(baseline.result_id),
        policy=policy, noise_floor=floor.floor if floor else None,
        confirmation=ConfirmationCheck.from_dict(saved) if saved else None,
    )
    if floor is not None:
        verdict.notes.append(f"noise floor {_pct(floor.floor)} learnt from {floor.n_runs} runs of unchanged bundles")
    if policy.changepoints and verdict.status not in ("invalid",):
        add_trend(store, result, verdict, policy)
    return verdict


def _latest_per_device(results: Iterable[Result]) -> list[Result]:
    """One result per (device, profile): the last 'ok' one if any (a retry supersedes a failure)."""
    chosen: dict[tuple[str, Optional[str]], Result] = {}
    for result in sorted(results, key=lambda r: r.id):
        key = (result.device, result.profile_name)
        current = chosen.get(key)
        if current is None or result.status == "ok" or current.status != "ok":
            chosen[key] = result
    return [chosen[k] for k in sorted(chosen, key=lambda k: (k[0], k[1] or ""))]


def check_run(store: ResultsStore, run_id: int, *, policy: Policy = DEFAULT_POLICY, save: bool = True) -> list[Verdict]:
    """Verdicts for every (device, profile) of a run. ``save`` stores them with the run (so
    regenerated reports show what was decided at the time) and updates the noise floors."""
    store.get_run(run_id)  # raises StoreError for an unknown run
    verdicts = [check_result(store, r, policy=policy, save_noise=save) for r in _latest_per_device(store.results_for_run(run_id))]
    if save:
        store.save_verdicts(run_id, [(v.result_id, v.to_dict()) for v in verdicts])
    return verdicts


def load_verdicts(store: ResultsStore, run_id: int, *, policy: Policy = DEFAULT_POLICY) -> list[Verdict]:
    """The verdicts saved when the run was checked, or freshly computed (not saved) if it never was."""
    saved = store.saved_verdicts(run_id)
    if saved:
        return [Verdict.from_dict(v) for v in saved]
    return check_run(store, run_id, policy=policy, save=False)


@dataclass(frozen=True)
class RunSummary:
    counts: dict[str, int]
    exit_code: int
    total: int
    regressed: dict[str, int] = field(default_factory=dict)  # metric -> devices that regressed in it

    @property
    def headline(self) -> str:
        """``2 regression (latency 1, memory 1), 3 pass``: every regression names its metric."""
        parts = [f"{self.counts[s]} {s}" for s in STATUSES if self.counts.get(s)]
        if self.regressed and self.counts.get("regression"):
            metrics = ", ".join(m if self.counts["regression"] == 1 else f"{m} {n}" for m, n in self.regressed.items())
            parts = [f"{p} ({metrics})" if p.endswith(" regression") else p for p in parts]
        return ", ".join(parts) if parts else "no results"


def exit_code(verdicts: Iterable[Verdict]) -> int:
    """0: nothing wrong; 1: any regression or unconfirmed suspicion; 2: no regression but a device was unreachable or failed
    (a busy labgrid place is neither: the summary counts it, the exit code does not)."""
    statuses = {v.status for v in verdicts}
    if statuses & {"regression", "unconfirmed"}:
        return EXIT_REGRESSION
    if statuses & {"unreachable", "failed"}:
        return EXIT_INFRASTRUCTURE
    return EXIT_OK


def summarize(verdicts: Sequence[Verdict]) -> RunSummary:
    counts = {s: 0 for s in STATUSES}
    regressed: dict[str, int] = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
        if v.status == "regression":
            for metric in v.regressed_metrics():
                regressed[metric] = regressed.get(metric, 0) + 1
    return RunSummary(counts=counts, exit_code=exit_code(verdicts), total=len(verdicts), regressed=regressed)

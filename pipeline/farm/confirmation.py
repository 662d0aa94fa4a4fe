"""Confirm a suspected latency regression by an interleaved A/B on the device, before the verdict.

Why: comparing tonight's samples with a baseline stored weeks ago also compares two states of the
device (temperature, governor, background daemons, the host's mood on a shared runner). The A/B
runs the baseline bundle (A) and tonight's bundle (B) in one agent session, alternating blocks
AB, BA, AB, ... so both see the same process, thermal state and governor, and any drift during the
session hits both arms alike.

Decision (all from :class:`~pipeline.farm.policy.Policy`):

* **Suspicion** (:func:`suspicion`): the stored-baseline comparison gives median ratio
  >= 1 + min(suspect_effect, min_effect) with Mann-Whitney p < alpha. No noise floor here: the
  A/B, not the history, decides, so a noisy device's threshold cannot hide a real slowdown.
* **Confirmed** (:func:`judge_pairs`): for each pair, r = p50(B block) / p50(A block); the median
  of r is >= 1 + min_effect, and B is slower in more pairs than chance (one-sided exact sign test,
  p < ab_alpha; with 8 pairs that means at least 7).
* A device whose throttling state shows up or changes during the session makes the A/B
  **invalid**: the blocks were not run under the same conditions, so nothing is compared.
* A baseline bundle neither kept on the device nor in the host's bundle cache, or an A/B that
  fails, is **unavailable**: the verdict is ``unconfirmed``, never a silent pass.

The plan (baseline bundle and samples) is read from the store on the runner's main thread, since
the store is written from that thread only; the A/B itself runs in the device's worker thread
while its connection (and labgrid lease) is still held.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from pipeline.errors import EdgeshipError
from pipeline.farm.policy import Policy
from pipeline.farm.stats import mann_whitney_u, sign_test_greater
from pipeline.farm.store import ResultsStore
from pipeline.farm.verdicts import THRESHOLD_SLACK, ConfirmationCheck

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConfirmPlan:
    """What a worker needs to confirm one device's suspicion without touching the store."""

    baseline_bundle_id: str
    baseline_samples: tuple[float, ...]
    host_bundle: Optional[Path]  # the baseline bundle in the host cache, for a device that pruned it
    policy: Policy


def plan_confirmation(
    store: ResultsStore, device: str, device_class: Optional[str], profile_name: str, emulated: bool, policy: Policy
) -> Optional[ConfirmPlan]:
    """None when confirmation is off or there is no comparable baseline (nothing to suspect)."""
    from pipeline.deploy.ab import find_host_bundle

    if not policy.confirm:
        return None
    baseline = store.baseline(device, device_class, profile_name, emulated=emulated)
    if baseline is None or not baseline.result.bundle_id:
        return None
    samples = tuple(float(s) for s in store.get_samples(baseline.result_id))
    bundle_id = baseline.result.bundle_id
    return ConfirmPlan(bundle_id, samples, find_host_bundle(bundle_id), policy)


def suspicion(baseline_samples: Sequence[float], candidate_samples: Sequence[float], policy: Policy) -> Optional[str]:
    """Why tonight looks slower than the stored baseline, or None (see module docstring)."""
    base = np.asarray(baseline_samples, dtype=np.float64)
    cand = np.asarray(candidate_samples, dtype=np.float64)
    if len(base) < policy.min_samples or len(cand) < policy.min_samples:
        return None
    base_p50, cand_p50 = float(np.median(base)), float(np.median(cand))
    if base_p50 <= 0:
        return None
    ratio = cand_p50 / base_p50
    threshold = min(policy.suspect_effect, policy.min_effect)
    if ratio < 1.0 + threshold - THRESHOLD_SLACK:
        return None
    _, p = mann_whitney_u(cand, base, "greater")
    if p >= policy.alpha:
        return None
    return f"p50 x{ratio:.3f} vs the stored baseline (>= x{1 + threshold:.3f}, Mann-Whitney p={p:.2g})"


def judge_pairs(
    pairs: Sequence[tuple[float, float]],
    a_samples: Sequence[float],
    b_samples: Sequence[float],
    policy: Policy,
    *,
    throttled: bool = False,
    throttle_detail: Optional[str] = None,
    seconds: Optional[float] = None,
    baseline_source: Optional[str] = None,
) -> ConfirmationCheck:
    """The A/B's verdict from its paired block medians (A = baseline, B = candidate)."""
    check = ConfirmationCheck(
        status="not-confirmed", threshold=policy.min_effect, alpha=policy.ab_alpha, throttled=throttled,
        seconds=seconds, baseline_source=baseline_source,
    )
    if len(a_samples) and len(b_samples):
        check.baseline_p50 = float(np.median(a_samples))
        check.candidate_p50 = float(np.median(b_samples))
    if throttled:
        check.status = "invalid"
        check.reason = f"the device throttled during the A/B, so its blocks are not comparable: {throttle_detail or 'no detail'}"
        return check
    ratios = [b / a for a, b in pairs if a > 0 and b > 0]
    check.pairs = len(ratios)
    if len(ratios) < 2:
        check.status = "unavailable"
        check.reason = f"the A/B returned {len(ratios)} usable pairs, need at least 2"
        return check
    signed = [r for r in ratios if r != 1.0]
    check.pairs_slower = sum(r > 1.0 for r in signed)
    check.p_sign = sign_test_greater(check.pairs_slower, len(signed))
    check.ratio = float(np.median(ratios))
    basis = (
        f"paired ratio x{check.ratio:.3f} over {check.pairs} pairs, B slower in {check.pairs_slower}, "
        f"sign test p={check.p_sign:.2g}"
    )
    if check.ratio >= 1.0 + policy.min_effect - THRESHOLD_SLACK and check.p_sign < policy.ab_alpha:
        check.status = "confirmed"
        check.reason = f"A/B confirmed: {basis} (>= x{1 + policy.min_effect:.3f}, p < {policy.ab_alpha})"
    else:
        check.reason = f"A/B did not confirm: {basis} (needs >= x{1 + policy.min_effect:.3f} and p < {policy.ab_alpha})"
    return check


def confirm_on_device(
    plan: ConfirmPlan,
    target: Any,
    transport: Any,
    candidate_bundle_id: str,
    *,
    timeout: Optional[float] = None,
    step: Optional[Callable[[str], None]] = None,
    doctor: Any = None,
) -> tuple[ConfirmationCheck, Optional[dict[str, Any]]]:
    """Run the A/B on the connected device; returns the check and the agent's raw A/B record.

    Never raises for a device-side failure: a baseline that cannot be found, or an A/B that
    fails, is an 'unavailable' check whose reason says why (the verdict becomes 'unconfirmed').
    ``doctor``: tonight's report from the deploy on this connection, so the A/B does not ask again."""
    from pipeline.deploy.ab import BaselineMissing, ab_profile

    policy = plan.policy
    started = time.monotonic()
    try:
        record, source = ab_profile(
            target, transport=transport, baseline_id=plan.baseline_bundle_id, candidate_id=candidate_bundle_id,
            baseline_bundle=plan.host_bundle, blocks=policy.ab_blocks, runs_per_block=policy.ab_runs_per_block,
            min_block_seconds=policy.ab_min_block_seconds, timeout=timeout, step=step, doctor=doctor,
        )
    except BaselineMissing as exc:
        return ConfirmationCheck(status="unavailable", reason=f"baseline bundle missing: {exc}", seconds=time.monotonic() - started), None
    except EdgeshipError as exc:
        log.info("A/B on %s failed: %s", getattr(target, "name", "?"), exc)
        return ConfirmationCheck(status="unavailable", reason=f"the A/B failed: {exc}", seconds=time.monotonic() - started), None
    check = judge_pairs(
        record.pairs(), record.samples("a"), record.samples("b"), policy, throttled=record.throttled,
        throttle_detail=record.throttle_detail, seconds=time.monotonic() - started, baseline_source=source,
    )
    return check, record.raw

"""Memory and energy against the baseline: one tolerance rule, max(relative x baseline, absolute floor).

Both are single numbers per run (no samples to test), so a change counts when it leaves the tolerance
band; latency, with its samples and noise floor, lives in :mod:`pipeline.farm.regression`.
"""

from __future__ import annotations

from typing import Optional

from pipeline.farm.policy import DEFAULT_POLICY, Policy
from pipeline.farm.rows import Result
from pipeline.farm.verdicts import THRESHOLD_SLACK, EnergyCheck, MemoryCheck


def _band(baseline: float, candidate: float, rel: float, floor: float) -> tuple[float, float, float, str]:
    """``(delta, ratio, threshold, status)`` of ``candidate`` against ``baseline`` (> 0)."""
    delta, threshold = candidate - baseline, max(rel * baseline, floor)
    status = (
        "regression" if delta > threshold + THRESHOLD_SLACK
        else "improvement" if -delta > threshold + THRESHOLD_SLACK
        else "pass"
    )  # fmt: skip
    return delta, candidate / baseline, threshold, status


def check_memory(baseline: Result, candidate: Result, *, policy: Policy = DEFAULT_POLICY) -> tuple[MemoryCheck, list[str]]:
    base, cand = baseline.peak_rss_mb, candidate.peak_rss_mb
    check = MemoryCheck(status="not-compared", baseline_mb=base, candidate_mb=cand)
    if base is None or cand is None or base <= 0:
        return check, []
    check.delta_mb, check.ratio, check.threshold_mb, check.status = _band(base, cand, policy.memory_rel, policy.memory_abs_mb)
    if check.status == "regression":
        return check, [
            f"memory regression: peak RSS {cand:.1f} MB vs baseline {base:.1f} MB "
            f"(+{check.delta_mb:.1f} MB > allowed {check.threshold_mb:.1f} MB)"
        ]
    if check.status == "improvement":
        return check, [f"memory improvement: peak RSS {check.delta_mb:+.1f} MB"]
    return check, []


def _no_energy(result: Result, which: str) -> str:
    """Why ``result`` (the baseline or the candidate) has no energy estimate to compare."""
    reason = result.record.energy_unavailable if result.record is not None else None
    return f"{which} has no energy estimate" + (f" ({reason})" if reason else "")


def check_energy(baseline: Result, candidate: Result, *, policy: Policy = DEFAULT_POLICY) -> tuple[EnergyCheck, list[str]]:
    """Energy per inference, like :func:`check_memory`; compared only when both runs have an estimate."""
    base: Optional[float] = baseline.energy_mj_per_inference
    cand: Optional[float] = candidate.energy_mj_per_inference
    check = EnergyCheck(status="not-compared", baseline_mj=base, candidate_mj=cand)
    if base is None or cand is None:
        check.reason = "; ".join(
            _no_energy(r, which) for r, which, value in ((candidate, "this run", cand), (baseline, "the baseline", base))
            if value is None
        )
        return check, []
    if base <= 0:
        check.reason = f"the baseline's energy estimate is {base:.4f} mJ, not above idle"
        return check, []
    check.delta_mj, check.ratio, check.threshold_mj, check.status = _band(base, cand, policy.energy_rel, policy.energy_abs_mj)
    if check.status == "regression":
        return check, [
            f"energy regression: {cand:.4f} mJ per inference vs baseline {base:.4f} mJ "
            f"(+{check.delta_mj:.4f} mJ > allowed {check.threshold_mj:.4f} mJ; estimated from the PMIC)"
        ]
    if check.status == "improvement":
        return check, [f"energy improvement: {check.delta_mj:+.4f} mJ per inference"]
    return check, []

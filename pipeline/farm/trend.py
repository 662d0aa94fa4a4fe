"""The history check: change points in a device's nightly medians, attached to its verdict.

A step flags the verdict (metric ``latency-trend``) only when all of these hold, so that the
environment cannot raise it on its own:

* it is the latest change point of the series, so tonight's result is in the raised regime;
* it raised the level by at least the policy's ``min_effect``;
* it began within the last ``changepoint_recent`` nights: a week of mornings is long enough to
  be seen, and a step that stays flagged for ever would teach the team to ignore the gate (a
  baseline re-accepted every night cannot stand for "seen": a creep would never be flagged);
* no bundle was measured both before and after it: the same bundle getting slower is the
  device or its environment (a competitor, the governor, heat), not the model.

Steps that fail a condition are still listed on the verdict and in the reports, unflagged.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.farm.changepoints import as_dicts, device_change_points
from pipeline.farm.policy import Policy
from pipeline.farm.rows import Result
from pipeline.farm.verdicts import THRESHOLD_SLACK, Verdict

log = logging.getLogger(__name__)


def add_trend(store: Any, result: Result, verdict: Verdict, policy: Policy) -> None:
    """Fill ``verdict.change_points`` / ``verdict.trend``; a flagged step makes it a regression."""
    report = device_change_points(
        store, result.device, result.profile_name or "", window=policy.changepoint_window,
        emulated=result.emulated, before_result_id=result.id + 1,
    )
    if report.message:
        verdict.trend = report.message
        return
    points = as_dicts(report)
    if not points:
        return
    for point, found in zip(points, report.points):
        point["kind"] = found.kind
    bundles = report.bundle_ids
    latest = points[-1]
    latest_index = int(latest["index"])
    before, after = set(bundles[:latest_index]), set(bundles[latest_index:])
    why_not = []
    if report.result_ids and report.result_ids[-1] != result.id:
        why_not.append("tonight's result is not in the series")
    if latest["ratio"] < 1.0 + policy.min_effect - THRESHOLD_SLACK:
        why_not.append(f"x{latest['ratio']:.3f} is below x{1 + policy.min_effect:.3f}")
    age = len(report.values) - latest_index
    if age > policy.changepoint_recent:
        why_not.append(f"it began {age} results ago, more than the {policy.changepoint_recent} the policy flags for")
    shared = before & after
    if shared:
        why_not.append(f"bundle {sorted(b or '?' for b in shared)[0][:12]} ran on both sides (the device changed, not the model)")
    latest["flagged"] = not why_not
    verdict.change_points = points
    step = f"latest step x{latest['ratio']:.3f} began at run {latest['run_id']} (result {latest['result_id']})"
    if latest["flagged"]:
        verdict.trend = f"latency-trend regression: {step}, at least {policy.min_effect * 100:.0f}% over the level before it"
        verdict.reasons.append(verdict.trend)
        if verdict.status in ("pass", "improvement", "unconfirmed"):
            verdict.status = "regression"
    else:
        verdict.trend = f"{step}; not flagged: {'; '.join(why_not)}"

"""Change points in a device's nightly series of medians (p50 per result), for the regression gate.

Skeleton: the public API is final, the detector is being improved.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_SENSITIVITY = 3.0
DEFAULT_MIN_SIZE = 5
DEFAULT_MIN_STEP = 0.03


@dataclass(frozen=True)
class ChangePoint:
    """A new latency level starting at ``index`` (its first point) of the series."""

    index: int
    before: float
    after: float
    ratio: float


@dataclass
class ChangePointReport:
    """Change points of one device and profile, with the ids of the results the series came from."""

    device: str
    profile_name: str
    points: list[ChangePoint] = field(default_factory=list)
    result_ids: list[int] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    message: Optional[str] = None


def detect_change_points(
    values: Sequence[float],
    *,
    sensitivity: float = DEFAULT_SENSITIVITY,
    min_size: int = DEFAULT_MIN_SIZE,
    min_step: float = DEFAULT_MIN_STEP,
) -> list[ChangePoint]:
    """Level shifts in ``values`` (positive medians), oldest first; steps with |ratio-1| < min_step are dropped."""
    x = np.log(np.asarray(values, dtype=float))
    n = len(x)
    if n < 2 * min_size:
        return []
    best, best_at = 0.0, None
    for k in range(min_size, n - min_size + 1):
        diff = abs(x[:k].mean() - x[k:].mean())
        if diff > best:
            best, best_at = diff, k
    noise = float(np.median(np.abs(np.diff(x)))) / 0.954 or 1e-12
    if best_at is None or best < sensitivity * noise / math.sqrt(min(best_at, n - best_at)):
        return []
    before = float(np.exp(np.median(x[:best_at])))
    after = float(np.exp(np.median(x[best_at:])))
    ratio = after / before
    return [ChangePoint(best_at, before, after, ratio)] if abs(ratio - 1) >= min_step else []


def device_change_points(
    store: Any,
    device: str,
    profile_name: str,
    *,
    window: int = 60,
    emulated: Optional[bool] = None,
    before_result_id: Optional[int] = None,
    **detector_kwargs: Any,
) -> ChangePointReport:
    """Change points over the last ``window`` comparable results; never raises for bad or short history."""
    report = ChangePointReport(device, profile_name)
    try:
        history = store.history(device, profile_name, window, emulated=emulated, before_result_id=before_result_id)
    except Exception as exc:  # noqa: BLE001 - the other checks must go on
        report.message = f"{device} / {profile_name}: could not read the history: {exc}"
        return report
    report.result_ids = [r.id for r in history]
    report.run_ids = [r.run_id for r in history]
    report.values = [r.p50 for r in history]
    report.points = detect_change_points(report.values, **detector_kwargs)
    return report


def as_dicts(report: ChangePointReport) -> list[dict]:
    """The points as ``Verdict.change_points`` stores them."""
    return [
        {"index": p.index, "result_id": report.result_ids[p.index], "run_id": report.run_ids[p.index],
         "before": p.before, "after": p.after, "ratio": p.ratio}
        for p in report.points
    ]

"""Change points in a device's nightly series of medians (p50 per result), for the regression gate.

Why: a nightly comparison against the stored baseline sees one night at a time; a level that moved
weeks ago, or creeps up 2 % a night, only shows in the series. This module finds where the latency
level of one device and profile changed, and by how much.

How
---
* Work on ``log(p50)``: latency changes are multiplicative (a 10 % slower kernel is +10 % on any
  model), so a step is a shift of the mean in log space and ``ratio = after / before``.
* Noise scale: ``sigma`` from the median absolute night-to-night difference (``MAD(diff) / 0.954``
  is sigma for Gaussian noise), robust to the steps and outliers being looked for, floored at
  :data:`SIGMA_FLOOR` so a perfectly flat series does not turn rounding into change points.
* Steps: PELT with the L2 cost from ``ruptures`` on the standardized series, penalty
  ``sensitivity * log(n)`` per change point (a BIC-like penalty: higher ``sensitivity``, fewer
  points). Each segment is summarized by its *median* (one slow night does not move a level), and
  the weakest step is merged away while ``|ratio - 1| < min_step``, so every reported step is
  at least ``min_step`` and the levels either side are recomputed over the merged segments.
* Creep: a slow creep (2 %/night) has no single jump. PELT puts a break in the ramp anyway once
  ``min_size`` creeping points stand above the history, and the merge keeps it when the ramp so
  far has risen ``min_step``. As a second line, :func:`recent_trend` tests the last
  ``trend_window`` nights for a monotone trend (Kendall's tau, one-sided, from scipy) and, if the
  Theil-Sen slope over that window adds up to at least ``min_step`` and no step was reported in
  the window, reports it as a change point at the window's first night; ``after`` is the
  Theil-Sen line at the last night.

Library choice: the issue names E-Divisive (``apache-otava``, formerly hunter) or an equivalent.
apache-otava 0.8.0 pins ``numpy==2.2.0.*`` (this venv has numpy 2.4, which TensorFlow uses) and
pulls google-cloud-bigquery, slack-sdk, pg8000 and a CLI stack; ``ruptures`` needs only numpy and
scipy. For a series of medians the change of interest is a level shift, which PELT/L2 finds exactly
(E-Divisive also looks for changes in spread, which a series of medians hardly has).

:func:`device_change_points` reads the series from the results store and never raises for a bad
or short history: the report's ``message`` says why there are no points, so other checks go on.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_SENSITIVITY = 4.0
DEFAULT_MIN_SIZE = 5
DEFAULT_MIN_STEP = 0.03
DEFAULT_TREND_WINDOW = 7
DEFAULT_TREND_ALPHA = 0.01
# log-space noise floor (0.1 %): medians of real devices are never steadier than that.
SIGMA_FLOOR = 1e-3


@dataclass(frozen=True)
class ChangePoint:
    """A new latency level starting at ``index`` (its first point) of the series.

    ``before``/``after`` are the median levels of the segments either side (for a trend: the
    median before the trend window and the Theil-Sen line at the last point); ``kind`` is
    ``'step'`` or ``'trend'``.
    """

    index: int
    before: float
    after: float
    ratio: float
    kind: str = "step"

    @property
    def slower(self) -> bool:
        return self.ratio > 1.0


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
    bundle_ids: list[Optional[str]] = field(default_factory=list)  # which bundle each point measured


def min_points(min_size: int = DEFAULT_MIN_SIZE) -> int:
    """The shortest series worth looking at: two segments of ``min_size``, at least 6 points."""
    return max(2 * min_size, 6)


def noise_sigma(logs: np.ndarray) -> float:
    """Robust night-to-night noise (log space): MAD of first differences, floored."""
    if len(logs) < 2:
        return SIGMA_FLOOR
    return max(float(np.median(np.abs(np.diff(logs)))) / 0.954, SIGMA_FLOOR)


def _segment_levels(logs: np.ndarray, breaks: list[int]) -> list[float]:
    edges = [0, *breaks, len(logs)]
    return [float(np.median(logs[a:b])) for a, b in zip(edges[:-1], edges[1:])]


def _merge_small_steps(logs: np.ndarray, breaks: list[int], min_step: float) -> list[ChangePoint]:
    """Drop the weakest break while any step is under ``min_step``; the rest as ChangePoints."""
    breaks = sorted(breaks)
    while breaks:
        levels = _segment_levels(logs, breaks)
        steps = [abs(math.expm1(b - a)) for a, b in zip(levels[:-1], levels[1:])]
        weakest = int(np.argmin(steps))
        if steps[weakest] >= min_step:
            break
        del breaks[weakest]
    levels = _segment_levels(logs, breaks)
    return [
        ChangePoint(at, math.exp(a), math.exp(b), math.exp(b - a))
        for at, a, b in zip(breaks, levels[:-1], levels[1:])
    ]


def _pelt_breaks(z: np.ndarray, sensitivity: float, min_size: int) -> list[int]:
    import ruptures  # noqa: PLC0415 - imported on use: numpy-only callers need not pay for scipy

    bkps = ruptures.Pelt(model="l2", min_size=min_size, jump=1).fit(z).predict(pen=sensitivity * math.log(len(z)))
    return [int(b) for b in bkps[:-1]]


def recent_trend(
    logs: np.ndarray, *, window: int = DEFAULT_TREND_WINDOW, alpha: float = DEFAULT_TREND_ALPHA, min_step: float = DEFAULT_MIN_STEP
) -> Optional[ChangePoint]:
    """A monotone trend over the last ``window`` points (Kendall, one-sided p < alpha) whose
    Theil-Sen slope adds up to at least ``min_step`` over the window, or None."""
    from scipy import stats  # noqa: PLC0415

    n = len(logs)
    if window < 4 or n < window + 3:
        return None
    start = n - window
    recent = logs[start:]
    t = np.arange(window, dtype=float)
    tau = stats.kendalltau(t, recent)
    slope, intercept, _, _ = stats.theilslopes(recent, t)
    rise = math.expm1(slope * (window - 1))
    if not np.isfinite(tau.pvalue) or abs(rise) < min_step or np.sign(tau.statistic) != np.sign(slope):
        return None
    if tau.pvalue / 2 >= alpha:  # scipy's p is two-sided
        return None
    before = math.exp(float(np.median(logs[:start])))
    after = math.exp(intercept + slope * (window - 1))
    return ChangePoint(start, before, after, after / before, kind="trend")


def detect_change_points(
    values: Sequence[float],
    *,
    sensitivity: float = DEFAULT_SENSITIVITY,
    min_size: int = DEFAULT_MIN_SIZE,
    min_step: float = DEFAULT_MIN_STEP,
    trend_window: int = DEFAULT_TREND_WINDOW,
    trend_alpha: float = DEFAULT_TREND_ALPHA,
) -> list[ChangePoint]:
    """Level shifts (and a recent creep) in ``values``, positive medians oldest first.

    Only steps with ``|ratio - 1| >= min_step`` are reported; a series shorter than
    :func:`min_points` has none. Raises ValueError for non-finite or non-positive values
    (:func:`device_change_points` turns those into a message).
    """
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"a series of medians is one-dimensional, not shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError("medians must be finite and positive")
    if len(arr) < min_points(min_size):
        return []
    logs = np.log(arr)
    z = (logs - np.median(logs)) / noise_sigma(logs)
    points = _merge_small_steps(logs, _pelt_breaks(z, sensitivity, min_size), min_step)
    trend = recent_trend(logs, window=trend_window, alpha=trend_alpha, min_step=min_step)
    if trend is not None and not any(p.index >= trend.index for p in points):
        points.append(trend)
    return points


def _bad_medians(values: Sequence[Optional[float]]) -> list[int]:
    return [i for i, v in enumerate(values) if v is None or not math.isfinite(v) or v <= 0]


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
    """Change points over the last ``window`` comparable results of ``device`` for ``profile_name``.

    ``store`` is a :class:`pipeline.farm.store.ResultsStore`. Never raises for an unreadable,
    short or corrupt history: the report then has no points and a ``message`` naming both.
    """
    report = ChangePointReport(device, profile_name)
    where = f"device {device}, profile {profile_name}"
    try:
        history = store.history(device, profile_name, window, emulated=emulated, before_result_id=before_result_id)
    except Exception as exc:  # noqa: BLE001 - a broken store must not stop the other checks
        log.warning("change points: cannot read the history of %s: %s", where, exc)
        report.message = f"Change points for {where}: the results store could not be read ({exc})."
        return report
    report.result_ids = [r.id for r in history]
    report.run_ids = [r.run_id for r in history]
    report.values = [r.p50 for r in history]
    report.bundle_ids = [r.bundle_id for r in history]
    bad = _bad_medians(report.values)
    if bad:
        ids = ", ".join(str(report.result_ids[i]) for i in bad[:5])
        report.message = (
            f"Change points for {where}: {len(bad)} of {len(history)} results have no usable median "
            f"(missing, NaN or not positive; result ids {ids}{', ...' if len(bad) > 5 else ''}); the store may be damaged."
        )
        return report
    needed = min_points(detector_kwargs.get("min_size", DEFAULT_MIN_SIZE))
    if len(history) < needed:
        report.message = f"Change points for {where}: {len(history)} comparable results, {needed} needed."
        return report
    try:
        report.points = detect_change_points(report.values, **detector_kwargs)
    except ValueError as exc:
        report.message = f"Change points for {where}: {exc}."
    except ImportError as exc:  # the detector's libraries are host-side extras
        report.message = f"Change points for {where}: not computed, {exc.name or exc} is not installed (pip install ruptures)."
    return report


def as_dicts(report: ChangePointReport) -> list[dict]:
    """The points as ``Verdict.change_points`` stores them."""
    return [
        {"index": p.index, "result_id": report.result_ids[p.index], "run_id": report.run_ids[p.index],
         "before": p.before, "after": p.after, "ratio": p.ratio}
        for p in report.points
    ]

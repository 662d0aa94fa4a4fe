"""What the regression check decides, per (device, profile): a :class:`Verdict` and its parts.

Plain data, saved with the run as JSON (:meth:`Verdict.to_dict`) and read back by the reports
(:meth:`Verdict.from_dict`), so a regenerated report shows what was decided at the time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Optional

# 'busy': a shared-lab (labgrid) place someone else held for the whole wait; not measured, and not
# an infrastructure failure (the lab works, it was in use).
# 'unconfirmed': the stored-baseline check suspected a latency regression that the device's A/B
# confirmation could not settle (baseline bundle gone from device and host, the A/B failed). It is
# never passed silently: it counts like a regression for the exit code.
STATUSES = ("pass", "regression", "unconfirmed", "improvement", "no-baseline", "invalid", "busy", "unreachable", "failed")
#: confirmation statuses: the A/B agreed, disagreed, could not run, ran but was not comparable
#: (throttled between blocks), or was not needed (no suspicion)
CONFIRMATION_STATUSES = ("confirmed", "not-confirmed", "unavailable", "invalid", "skipped")
#: float slack for threshold comparisons (0.900 - 0.895 is not exactly 0.005)
THRESHOLD_SLACK = 1e-9


@dataclass
class LatencyCheck:
    status: str  # 'pass' | 'regression' | 'improvement' | 'not-compared'
    baseline_p50: Optional[float] = None
    candidate_p50: Optional[float] = None
    ratio: Optional[float] = None  # median(candidate) / median(baseline) over the raw samples
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    ci_level: Optional[float] = None
    p_slower: Optional[float] = None  # one-sided Mann-Whitney p, candidate slower
    p_faster: Optional[float] = None
    alpha: Optional[float] = None
    threshold: Optional[float] = None  # effective: max(min_effect, noise_floor)
    min_effect: Optional[float] = None
    noise_floor: Optional[float] = None
    n_baseline: int = 0
    n_candidate: int = 0


@dataclass
class AccuracyCheck:
    status: str
    baseline_top1: Optional[float] = None
    candidate_top1: Optional[float] = None
    top1_delta: Optional[float] = None
    top1_threshold: Optional[float] = None
    baseline_agreement: Optional[float] = None
    candidate_agreement: Optional[float] = None
    agreement_delta: Optional[float] = None
    agreement_tolerance: Optional[float] = None

    # The one place that decides, for the check and for the summary line (Verdict.regressed_metrics).
    @property
    def top1_regressed(self) -> bool:
        return self.top1_delta is not None and self.top1_threshold is not None and -self.top1_delta > self.top1_threshold + THRESHOLD_SLACK

    @property
    def top1_improved(self) -> bool:
        return self.top1_delta is not None and self.top1_threshold is not None and self.top1_delta > self.top1_threshold + THRESHOLD_SLACK

    @property
    def agreement_regressed(self) -> bool:
        return (
            self.agreement_delta is not None
            and self.agreement_tolerance is not None
            and -self.agreement_delta > self.agreement_tolerance + THRESHOLD_SLACK
        )


@dataclass
class MemoryCheck:
    status: str
    baseline_mb: Optional[float] = None
    candidate_mb: Optional[float] = None
    delta_mb: Optional[float] = None
    ratio: Optional[float] = None
    threshold_mb: Optional[float] = None


@dataclass
class EnergyCheck:
    """Energy per inference above idle (mJ), compared only when both runs have an estimate."""

    status: str  # 'pass' | 'regression' | 'improvement' | 'not-compared'
    baseline_mj: Optional[float] = None
    candidate_mj: Optional[float] = None
    delta_mj: Optional[float] = None
    ratio: Optional[float] = None
    threshold_mj: Optional[float] = None
    reason: Optional[str] = None  # why it was not compared


@dataclass
class ConfirmationCheck:
    """The interleaved A/B on the device (baseline A, candidate B, one agent session), run only when
    the stored-baseline comparison suspected a latency regression."""

    status: str  # one of CONFIRMATION_STATUSES
    ratio: Optional[float] = None  # median over pairs of p50(B block) / p50(A block)
    pairs: int = 0
    pairs_slower: int = 0
    p_sign: Optional[float] = None  # one-sided sign test: B slower than A in more pairs than chance
    threshold: Optional[float] = None
    alpha: Optional[float] = None
    baseline_p50: Optional[float] = None  # over all A samples of the session
    candidate_p50: Optional[float] = None
    throttled: bool = False
    reason: str = ""
    seconds: Optional[float] = None  # device time the A/B took
    baseline_source: Optional[str] = None  # 'device' (a kept release) | 'uploaded' (from the host cache)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConfirmationCheck":
        return _known(cls, data)


@dataclass
class Verdict:
    """The outcome for one (device, profile) of a run."""

    device: str
    profile_name: Optional[str]
    status: str  # one of STATUSES
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # informational (runtime changed, ...)
    device_class: Optional[str] = None
    run_id: Optional[int] = None
    result_id: Optional[int] = None
    bundle_id: Optional[str] = None
    emulated: bool = False
    p50: Optional[float] = None
    top1: Optional[float] = None
    peak_rss_mb: Optional[float] = None
    energy_mj_per_inference: Optional[float] = None
    baseline_key: Optional[str] = None
    baseline_result_id: Optional[int] = None
    baseline_bundle_id: Optional[str] = None
    latency: Optional[LatencyCheck] = None
    accuracy: Optional[AccuracyCheck] = None
    memory: Optional[MemoryCheck] = None
    energy: Optional[EnergyCheck] = None
    confirmation: Optional[ConfirmationCheck] = None
    policy: dict[str, Any] = field(default_factory=dict)  # the regression Policy that decided this
    change_points: list[dict[str, Any]] = field(default_factory=list)  # {index, result_id, run_id, before, after, ratio}
    trend: Optional[str] = None  # why the history could not be analysed, or what the latest step is

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def regressed_metrics(self) -> list[str]:
        """Which of latency, accuracy (top-1), agreement, memory and energy regressed, in that order: a
        run flagged only for memory must say so, not just "regression"."""
        metrics = []
        if self.latency_regressed:
            metrics.append("latency")
        if self.trend_regressed:
            metrics.append("latency-trend")
        if self.accuracy is not None and self.accuracy.top1_regressed:
            metrics.append("accuracy")
        if self.accuracy is not None and self.accuracy.agreement_regressed:
            metrics.append("agreement")
        if self.memory is not None and self.memory.status == "regression":
            metrics.append("memory")
        if self.energy is not None and self.energy.status == "regression":
            metrics.append("energy")
        return metrics

    @property
    def latency_regressed(self) -> bool:
        """A/B confirmation decides when one ran; without one, the stored-baseline comparison does."""
        if self.confirmation is not None and self.confirmation.status != "skipped":
            return self.confirmation.status == "confirmed"
        return self.latency is not None and self.latency.status == "regression"

    @property
    def trend_regressed(self) -> bool:
        """The latest change point of this device's history raised latency and ends at this result."""
        return any(cp.get("flagged") for cp in self.change_points)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Verdict":
        values = {k: v for k, v in data.items() if k in {f.name for f in fields(cls)}}
        for name, kind in (("latency", LatencyCheck), ("accuracy", AccuracyCheck), ("memory", MemoryCheck), ("energy", EnergyCheck),
                           ("confirmation", ConfirmationCheck)):
            if isinstance(values.get(name), Mapping):
                values[name] = _known(kind, values[name])
        return cls(**values)


def _known(kind: Any, data: Mapping[str, Any]) -> Any:
    """``kind(**data)`` keeping only the fields ``kind`` has (records written by other versions)."""
    return kind(**{k: v for k, v in data.items() if k in {f.name for f in fields(kind)}})

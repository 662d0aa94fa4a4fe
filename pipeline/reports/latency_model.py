"""What channel pruning can and cannot buy on a CPU: a latency model fitted to measured p50s.

A small model's invoke time is not proportional to its MACs. Every op also costs a fixed amount:
dispatch, tensor bookkeeping, and memory traffic on tensors too small to keep the cores busy.
Structured pruning removes channels, not ops, so only the MAC part can shrink. The model

    p50 ≈ per_op_ms · ops + per_mmac_ms · MMACs        (one fit per quantization mode)

splits each variant's time into those two parts. Its fixed share is the floor that channel pruning
alone cannot go below, on the host where the p50s were measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np


EXPLAINED_R2 = 0.9


@dataclass(frozen=True)
class LatencyPoint:
    """One measured variant: its name, quantization mode, TFLite op count, MACs and p50 (ms)."""

    name: str
    mode: str
    ops: int
    macs: int
    p50_ms: float


def _nonnegative_fit(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with both coefficients >= 0: a negative cost per op or per MAC has no meaning,
    so when the free fit gives one, that term is dropped and the other refitted alone."""
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    if (coef >= 0).all():
        return coef
    best, best_err = np.zeros(2), np.inf
    for keep in (0, 1):
        column = design[:, keep]
        value = max(0.0, float(column @ y) / float(column @ column)) if column.any() else 0.0
        trial = np.zeros(2)
        trial[keep] = value
        err = float(((design @ trial - y) ** 2).sum())
        if err < best_err:
            best, best_err = trial, err
    return best


def fit_mode(points: Sequence[LatencyPoint]) -> dict[str, Any]:
    """The fit for one mode's points, with how well it explains them and each point's split."""
    if len(points) < 2:
        raise ValueError(f"a latency fit needs at least 2 variants, got {len(points)}")
    design = np.array([[p.ops, p.macs / 1e6] for p in points], dtype=np.float64)
    y = np.array([p.p50_ms for p in points], dtype=np.float64)
    per_op, per_mmac = _nonnegative_fit(design, y)
    predicted = design @ np.array([per_op, per_mmac])
    spread = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - predicted) ** 2).sum()) / spread if spread > 0 else None
    return {
        "per_op_us": round(1000 * float(per_op), 4),
        "per_mmac_us": round(1000 * float(per_mmac), 4),
        "r2": None if r2 is None else round(r2, 4),
        "max_relative_error": round(float(np.max(np.abs(predicted - y) / y)), 4),
        # below this, something other than ops and MACs sets the time (docs/RESULTS.md: int8 on
        # the Xeon host), and the split and the pruning predictions are not to be trusted
        "explains_latency": r2 is not None and r2 >= EXPLAINED_R2,
        "variants": [
            {
                "name": p.name,
                "ops": p.ops,
                "macs": p.macs,
                "p50_ms": round(p.p50_ms, 5),
                "predicted_ms": round(float(pred), 5),
                # the share of this variant's time that removing channels cannot touch
                "fixed_share": round(float(per_op * p.ops / pred), 4) if pred > 0 else None,
            }
            for p, pred in zip(points, predicted)
        ],
    }


def fit(points: Iterable[LatencyPoint]) -> dict[str, dict[str, Any]]:
    """One fit per quantization mode (float and int8 kernels have different costs per op and per
    MAC); a mode with a single variant has nothing to fit and is left out."""
    by_mode: dict[str, list[LatencyPoint]] = {}
    for point in points:
        by_mode.setdefault(point.mode, []).append(point)
    return {mode: fit_mode(group) for mode, group in sorted(by_mode.items()) if len(group) >= 2}


def predicted_reduction(model: dict[str, Any], ops: int, macs_before: int, macs_after: int) -> float:
    """The p50 reduction the fit predicts when pruning takes MACs from ``macs_before`` to
    ``macs_after`` and leaves the ``ops`` in place (what structured pruning does)."""
    per_op, per_mmac = model["per_op_us"], model["per_mmac_us"]
    before = per_op * ops + per_mmac * macs_before / 1e6
    after = per_op * ops + per_mmac * macs_after / 1e6
    return round(1 - after / before, 4) if before > 0 else 0.0


def ceiling(model: dict[str, Any], ops: int, macs: int) -> float:
    """The largest p50 reduction channel pruning could give this model: removing every MAC."""
    return predicted_reduction(model, ops, macs, 0)


def describe(mode: str, model: dict[str, Any], where: str) -> str:
    """One line for a person: the fitted costs, or a warning that they explain little."""
    costs = f"{mode} on {where}: {model['per_op_us']:.2f} µs per op + {model['per_mmac_us']:.2f} µs per million MACs"
    r2 = model.get("r2")
    if not model.get("explains_latency"):
        shown = "n/a" if r2 is None else f"{r2:.2f}"
        return f"{costs} (R² {shown}: ops and MACs do not explain this mode's latency here)"
    shares = [v["fixed_share"] for v in model["variants"] if v.get("fixed_share") is not None]
    floor = f"; pruning channels cannot remove {min(shares):.0%}–{max(shares):.0%} of a variant's time" if shares else ""
    return f"{costs} (R² {r2:.2f}){floor}"

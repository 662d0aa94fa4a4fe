"""The numbers behind the regression check: rank test, bootstrap interval, noise floor.

Pure functions of sample arrays, knowing nothing of stores, records or policies, so each can be
checked against a textbook or scipy answer on its own; :mod:`pipeline.farm.regression` decides
what they mean.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np


def _rank_with_ties(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) and the sizes of the tie groups."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts) - 1  # tie group of each sorted position
    bounds = np.r_[np.flatnonzero(starts), len(values)]
    sizes = np.diff(bounds)
    average = (bounds[:-1] + bounds[1:] + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = average[group]
    return ranks, sizes


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mann_whitney_u(x: Sequence[float], y: Sequence[float], alternative: str = "greater") -> tuple[float, float]:
    """Mann-Whitney U of ``x`` against ``y`` and its p-value (normal approximation).

    ``alternative='greater'``: x tends to be larger than y; ``'less'``: smaller; ``'two-sided'``.
    Uses the tie-corrected variance and a continuity correction (as scipy's ``mannwhitneyu`` with
    ``method='asymptotic'``). Returns (U_x, p).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples must be non-empty")
    ranks, ties = _rank_with_ties(np.concatenate([x, y]))
    u = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    n = n1 + n2
    mu = n1 * n2 / 2.0
    tie_term = float(np.sum(ties.astype(np.float64) ** 3 - ties)) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:
        return u, 1.0
    sd = math.sqrt(var)
    if alternative == "greater":
        p = _normal_sf((u - mu - 0.5) / sd)
    elif alternative == "less":
        p = _normal_sf((mu - u - 0.5) / sd)
    elif alternative == "two-sided":
        p = min(1.0, 2.0 * _normal_sf((abs(u - mu) - 0.5) / sd))
    else:
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', not {alternative!r}")
    return u, min(1.0, max(0.0, p))


def bootstrap_median_ratio_ci(
    baseline: Sequence[float], candidate: Sequence[float], *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of median(candidate) / median(baseline).

    Each side is resampled with replacement independently; deterministic for a given ``seed``.
    Resamples are drawn in chunks so memory stays bounded for runs with many samples.
    """
    base = np.asarray(baseline, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if len(base) == 0 or len(cand) == 0:
        raise ValueError("both samples must be non-empty")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 2_000_000 // max(len(base), len(cand))))
    ratios = np.empty(n_boot, dtype=np.float64)
    done = 0
    while done < n_boot:
        k = min(chunk, n_boot - done)
        mb = np.median(base[rng.integers(0, len(base), size=(k, len(base)))], axis=1)
        mc = np.median(cand[rng.integers(0, len(cand), size=(k, len(cand)))], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios[done : done + k] = mc / mb
        done += k
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return float(low), float(high)


def noise_floor_from_medians(
    medians: Sequence[Optional[float]], bundles: Sequence[Optional[str]], quantile: float = 0.95, mad_k: float = 3.0
) -> tuple[Optional[float], int, int]:
    """Noise floor from a chronological series of run medians and their bundle ids.

    Returns (floor or None, number of consecutive same-bundle pairs, number of runs in them). With
    d = |log(m[i+1] / m[i])| over consecutive same-bundle pairs, the floor is
    ``exp(max(quantile(d), mad_k * 1.4826 * median(d))) - 1``.
    """
    logs = []
    runs: set[int] = set()
    for i in range(len(medians) - 1):
        m0, m1, b0, b1 = medians[i], medians[i + 1], bundles[i], bundles[i + 1]
        if b0 is not None and b0 == b1 and m0 is not None and m1 is not None and m0 > 0 and m1 > 0:
            logs.append(abs(math.log(m1 / m0)))
            runs.update((i, i + 1))
    if not logs:
        return None, 0, 0
    d = np.asarray(logs)
    spread = max(float(np.quantile(d, quantile)), mad_k * 1.4826 * float(np.median(d)))
    return float(math.expm1(spread)), len(logs), len(runs)


def sign_test_greater(n_greater: int, n: int) -> float:
    """One-sided exact sign test: P(X >= n_greater) for X ~ Binomial(n, 1/2).

    Used on A/B pairs: with 8 pairs, B slower in all 8 has p = 1/256, in 7 of 8 p = 9/256.
    Ties are the caller's to drop (they carry no sign).
    """
    if n < 0 or not 0 <= n_greater <= max(n, 0):
        raise ValueError(f"need 0 <= n_greater <= n, got {n_greater} of {n}")
    if n == 0:
        return 1.0
    return float(sum(math.comb(n, k) for k in range(n_greater, n + 1)) / 2.0**n)

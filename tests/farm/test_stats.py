"""The pure statistics of the regression check against exact, permutation and hand-computed answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline.farm.stats import bootstrap_median_ratio_ci, mann_whitney_u, noise_floor_from_medians
from tests.helpers.records import latency_samples

BUNDLE_A = "aaaaaaaaaaaaaaaa"
BUNDLE_B = "bbbbbbbbbbbbbbbb"


def test_mann_whitney_matches_exact_distribution_without_ties() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(1.0, 1.0, 8), rng.normal(0.0, 1.0, 8)
    u, p = mann_whitney_u(x, y, "greater")
    # exact null distribution of U by enumerating every split of the 16 pooled values
    pooled = np.concatenate([x, y])
    ranks = pooled.argsort().argsort() + 1
    r_x = ranks[:8].sum()
    exact_u = []
    for subset in itertools.combinations(range(16), 8):
        exact_u.append(ranks[list(subset)].sum() - 36)
    exact_p = np.mean(np.asarray(exact_u) >= r_x - 36)
    assert u == r_x - 36
    assert p == pytest.approx(exact_p, abs=0.01)
    _, p_less = mann_whitney_u(x, y, "less")
    assert p_less > 0.9
    _, p_two = mann_whitney_u(x, y, "two-sided")
    assert p_two == pytest.approx(min(1.0, 2 * p), abs=1e-12)


def test_mann_whitney_tie_correction_matches_permutation() -> None:
    rng = np.random.default_rng(5)
    x = np.round(rng.lognormal(0.03, 0.1, 30) * 10, 1)  # coarse rounding: many ties
    y = np.round(rng.lognormal(0.0, 0.1, 25) * 10, 1)
    assert len(np.unique(np.concatenate([x, y]))) < 45
    u, p = mann_whitney_u(x, y, "greater")
    pooled = np.concatenate([x, y])
    observed = (pooled[:30][:, None] > pooled[30:]).sum() + 0.5 * (pooled[:30][:, None] == pooled[30:]).sum()
    assert u == pytest.approx(observed)
    perm = []
    for _ in range(20000):
        shuffled = rng.permutation(pooled)
        a, b = shuffled[:30], shuffled[30:]
        perm.append((a[:, None] > b).sum() + 0.5 * (a[:, None] == b).sum())
    assert p == pytest.approx(np.mean(np.asarray(perm) >= observed), abs=0.015)


def test_mann_whitney_degenerate_inputs() -> None:
    assert mann_whitney_u([1.0] * 20, [1.0] * 20)[1] == 1.0
    assert mann_whitney_u(np.arange(10) + 100, np.arange(10))[1] < 1e-3
    with pytest.raises(ValueError):
        mann_whitney_u([], [1.0])


def test_bootstrap_ci_is_deterministic_and_covers_the_true_ratio() -> None:
    base, cand = latency_samples(1, n=250), latency_samples(2, n=250) * 1.2
    ci = bootstrap_median_ratio_ci(base, cand, seed=0)
    assert ci == bootstrap_median_ratio_ci(base, cand, seed=0)
    assert ci != bootstrap_median_ratio_ci(base, cand, seed=1)
    assert ci[0] < 1.2 < ci[1] and ci[0] > 1.1 and ci[1] < 1.3
    # large runs are bootstrapped in chunks without changing the answer's shape
    big = latency_samples(3, n=20000)
    low, high = bootstrap_median_ratio_ci(big, big, n_boot=300)
    assert low < 1.0 < high and high - low < 0.02


def test_noise_floor_from_medians() -> None:
    assert noise_floor_from_medians([10.0], [BUNDLE_A]) == (None, 0, 0)
    floor, pairs, runs = noise_floor_from_medians(
        [10.0, 11.0, 10.0, 20.0, 20.2], [BUNDLE_A, BUNDLE_A, BUNDLE_A, BUNDLE_B, BUNDLE_B]
    )
    assert (pairs, runs) == (3, 5)  # the A->B step is a model change, not noise
    logs = np.abs(np.log([11 / 10, 10 / 11, 20.2 / 20]))
    assert floor == pytest.approx(np.expm1(max(np.quantile(logs, 0.95), 3 * 1.4826 * np.median(logs))))

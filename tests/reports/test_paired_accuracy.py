"""Paired comparisons of two models on the same images: McNemar, bootstrap and seed intervals."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.reports.paired_accuracy import compare, mcnemar_exact, paired_bootstrap_interval, t_interval


def test_mcnemar_counts_only_the_images_where_the_models_disagree() -> None:
    a = np.array([True] * 50 + [True] * 10 + [False] * 2)
    b = np.array([True] * 50 + [False] * 10 + [True] * 2)
    result = mcnemar_exact(a, b)
    assert (result["a_only"], result["b_only"]) == (10, 2)
    # two-sided exact binomial: P(X <= 2 or X >= 10 | n=12, p=1/2) = 2 * 79 / 4096
    assert result["p_value"] == pytest.approx(2 * 79 / 4096)


def test_identical_models_show_no_gain_and_no_evidence() -> None:
    rng = np.random.default_rng(0)
    correct = rng.random((3, 2000)) < 0.9
    result = compare(correct, correct.copy(), seeds=[1, 2, 3])
    assert result["gain_mean"] == 0
    assert result["pooled_mcnemar"] == {"a_only": 0, "b_only": 0, "p_value": 1.0}
    assert result["gain_ci_bootstrap_images"] == [0.0, 0.0]
    assert result["a_better"] is False


def test_a_clearly_better_model_is_called_better_with_both_intervals_above_zero() -> None:
    rng = np.random.default_rng(1)
    b = rng.random((3, 10_000)) < 0.92
    a = b | (rng.random((3, 10_000)) < 0.10)  # A fixes a tenth of B's mistakes
    result = compare(a, b, seeds=[7, 8, 9])
    assert result["a"]["mean"] > result["b"]["mean"]
    assert result["gain_ci_over_seeds"][0] > 0 and result["gain_ci_bootstrap_images"][0] > 0
    assert result["pooled_mcnemar"]["p_value"] < 1e-6 and result["a_better"] is True
    assert [row["seed"] for row in result["per_seed"]] == [7, 8, 9]


def test_a_gain_within_seed_noise_is_not_called_better() -> None:
    # Seed 1 favours A, seed 2 favours B by as much: the t interval over seeds straddles zero.
    b = np.zeros((3, 1000), bool)
    a = np.zeros((3, 1000), bool)
    a[0, :30] = True
    b[1, :30] = True
    a[2, :5] = True
    result = compare(a, b, seeds=[1, 2, 3])
    assert result["gain_ci_over_seeds"][0] < 0 < result["gain_ci_over_seeds"][1]
    assert result["a_better"] is False


def test_bootstrap_interval_covers_the_observed_gain() -> None:
    rng = np.random.default_rng(2)
    b = rng.random((2, 5000)) < 0.9
    a = rng.random((2, 5000)) < 0.91
    low, high = paired_bootstrap_interval(a, b, samples=2000)
    observed = a.mean() - b.mean()
    assert low < observed < high and high - low < 0.03


def test_t_interval_is_nan_for_a_single_seed_and_symmetric_otherwise() -> None:
    assert all(np.isnan(t_interval([0.5])))
    low, high = t_interval([1.0, 2.0, 3.0])
    assert low + high == pytest.approx(4.0) and low < 1.0


def test_arrays_of_different_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="seeds"):
        compare(np.ones((2, 10), bool), np.ones((2, 11), bool), seeds=[1, 2])

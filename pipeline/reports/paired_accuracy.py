"""Is model A more accurate than model B on the same test images? Paired tests over seeds.

Two students scored on the same 10,000 images are paired data: most images both get right or both
get wrong, and only the images where they disagree carry evidence. So the comparison uses:

* McNemar's exact test per seed (a binomial test on the discordant images), and pooled over seeds
  by summing the discordant counts (a summary: the seeds share the images, so it is not a test of
  independent samples);
* a paired bootstrap over images of the seed-mean gain, which captures test-set sampling;
* a t interval over the per-seed gains, which captures seed-to-seed variation (wide with 3 seeds,
  and that is the honest width).

The claim "A beats B" stands when both intervals lie above zero.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 10_000


def mcnemar_counts(a_only: int, b_only: int) -> dict[str, Any]:
    """Two-sided exact McNemar test on discordant counts (a binomial test at 1/2)."""
    from scipy.stats import binomtest

    discordant = a_only + b_only
    p = 1.0 if discordant == 0 else float(binomtest(a_only, discordant, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": p}


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict[str, Any]:
    """McNemar on per-image correctness: A right and B wrong (``a_only``) against the reverse."""
    return mcnemar_counts(int(np.sum(a_correct & ~b_correct)), int(np.sum(~a_correct & b_correct)))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean (NaNs when there is a single value)."""
    from scipy.stats import t

    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return (math.nan, math.nan)
    half = float(t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return (float(x.mean() - half), float(x.mean() + half))


def paired_bootstrap_interval(
    a_correct: np.ndarray, b_correct: np.ndarray, *, confidence: float = 0.95, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of mean(A) - mean(B) over seeds, resampling images (rows: seeds)."""
    diff = a_correct.astype(np.int8) - b_correct.astype(np.int8)  # seeds x images, in {-1, 0, 1}
    per_image = diff.mean(axis=0)  # the seed-mean gain carried by each image
    rng = np.random.default_rng(seed)
    n = per_image.shape[0]
    means = np.empty(samples)
    for start in range(0, samples, 500):  # chunks keep the index matrix small
        stop = min(samples, start + 500)
        means[start:stop] = per_image[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return (float(low), float(high))


def compare(a_correct: np.ndarray, b_correct: np.ndarray, seeds: Sequence[int], confidence: float = 0.95) -> dict[str, Any]:
    """Everything the README quotes about "A against B": per seed, pooled, and both intervals.

    ``a_correct`` and ``b_correct`` are boolean arrays of shape (seeds, images), one row per seed,
    the same images in the same order in both.
    """
    a_correct, b_correct = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    if a_correct.shape != b_correct.shape or a_correct.ndim != 2 or a_correct.shape[0] != len(seeds):
        raise ValueError(f"need (seeds, images) arrays of one shape for {len(seeds)} seeds, got {a_correct.shape} and {b_correct.shape}")
    a_acc, b_acc = a_correct.mean(axis=1), b_correct.mean(axis=1)
    gains = a_acc - b_acc
    per_seed = [
        {"seed": int(s), "a_accuracy": float(a), "b_accuracy": float(b), "gain": float(g), **mcnemar_exact(ac, bc)}
        for s, a, b, g, ac, bc in zip(seeds, a_acc, b_acc, gains, a_correct, b_correct)
    ]
    pooled = mcnemar_counts(sum(row["a_only"] for row in per_seed), sum(row["b_only"] for row in per_seed))
    seed_ci = t_interval(gains, confidence)
    image_ci = paired_bootstrap_interval(a_correct, b_correct, confidence=confidence)
    return {
        "seeds": [int(s) for s in seeds],
        "images": int(a_correct.shape[1]),
        "a": summary(a_acc),
        "b": summary(b_acc),
        "gain_mean": float(gains.mean()),
        "gain_std": float(gains.std(ddof=1)) if len(gains) > 1 else None,
        "gain_ci_over_seeds": list(seed_ci),
        "gain_ci_bootstrap_images": list(image_ci),
        "confidence": confidence,
        "per_seed": per_seed,
        "pooled_mcnemar": pooled,
        "a_better": bool(min(seed_ci[0], image_ci[0]) > 0) if not math.isnan(seed_ci[0]) else bool(image_ci[0] > 0),
    }


def summary(values: Sequence[float]) -> dict[str, Any]:
    x = np.asarray(values, dtype=np.float64)
    return {"values": [float(v) for v in x], "mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else None}

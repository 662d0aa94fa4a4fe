"""Multi-teacher soft targets are the weighted mean of the tempered distributions."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.training.ensemble import ensemble_logits


def softmax(z: np.ndarray, t: float) -> np.ndarray:
    e = np.exp(z / t - (z / t).max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_weighted_average_of_tempered_softmax() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 10)) * 3, rng.normal(size=(5, 10)) * 3
    out = ensemble_logits([a, b], [3.0, 1.0], temperature=4.0)
    expected = 0.75 * softmax(a, 4.0) + 0.25 * softmax(b, 4.0)
    np.testing.assert_allclose(softmax(out.astype(np.float64), 4.0), expected, rtol=1e-5, atol=1e-7)


def test_one_teacher_passes_through_and_errors_are_clear() -> None:
    a = np.ones((2, 3), dtype=np.float32)
    assert np.array_equal(ensemble_logits([a], [1.0], 2.0), a)
    with pytest.raises(ValueError, match="shape"):
        ensemble_logits([a, np.ones((3, 3))], [1, 1], 2.0)
    with pytest.raises(ValueError, match="one weight per teacher"):
        ensemble_logits([a, a], [1.0], 2.0)

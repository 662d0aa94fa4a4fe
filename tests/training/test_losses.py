"""The packed distillation loss, checked against the formula written out in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.training.fit import pack_targets
from pipeline.training.losses import kd_loss


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def reference(labels, student, teacher, k, t, alpha, smoothing):
    target = np.eye(k)[labels] * (1 - smoothing) + smoothing / k
    hard = -(target * log_softmax(student)).sum(axis=1)
    p_t, log_t, log_s = np.exp(log_softmax(teacher / t)), log_softmax(teacher / t), log_softmax(student / t)
    return alpha * hard + (1 - alpha) * t * t * (p_t * (log_t - log_s)).sum(axis=1)


@pytest.mark.parametrize("alpha, smoothing", [(1.0, 0.0), (1.0, 0.1), (0.5, 0.0), (0.5, 0.2)])
def test_loss_matches_the_formula(alpha: float, smoothing: float) -> None:
    rng = np.random.default_rng(0)
    k, labels = 5, rng.integers(0, 5, size=16)
    student, teacher = rng.normal(size=(16, k)) * 3, rng.normal(size=(16, k)) * 3
    packed = pack_targets(labels, k, teacher.astype(np.float32))
    got = np.asarray(kd_loss(k, 2.0, alpha, smoothing)(packed, student.astype(np.float32)))
    np.testing.assert_allclose(got, reference(labels, student, teacher, k, 2.0, alpha, smoothing), rtol=1e-4, atol=1e-5)


def test_smoothing_penalises_a_confident_correct_answer() -> None:
    packed = pack_targets(np.array([2]), 4)
    confident = np.array([[0.0, 0.0, 12.0, 0.0]], np.float32)
    plain = float(np.asarray(kd_loss(4, 1.0, 1.0)(packed, confident))[0])
    smoothed = float(np.asarray(kd_loss(4, 1.0, 1.0, label_smoothing=0.1)(packed, confident))[0])
    assert plain < 1e-3 < smoothed

"""Multi-teacher soft targets: a weighted average of the teachers' softened distributions.

The average is returned as logits at the distillation temperature (``T * log p``), so
``softmax(logits / T)`` is exactly the averaged distribution and the one-teacher KD loss needs no
change to train against an ensemble.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def ensemble_logits(logits: Sequence[np.ndarray], weights: Sequence[float], temperature: float) -> np.ndarray:
    """Logits whose tempered softmax is the weighted mean of each teacher's tempered softmax."""
    if not logits or len(logits) != len(weights):
        raise ValueError("ensemble_logits needs one weight per teacher and at least one teacher")
    shapes = {np.shape(item) for item in logits}
    if len(shapes) != 1:
        raise ValueError(f"teachers disagree on the logits shape: {sorted(shapes)}")
    if len(logits) == 1:
        return np.asarray(logits[0], dtype=np.float32)
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w <= 0):
        raise ValueError("teacher weights must be positive")
    mean = sum(wi * _softmax(z, temperature) for wi, z in zip(w / w.sum(), logits))
    return (temperature * np.log(np.maximum(mean, 1e-12))).astype(np.float32)

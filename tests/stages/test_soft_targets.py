"""Soft targets from cached teacher logits: plain, mirrored, and flip-averaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config.profile import DistillationConfig
from pipeline.stages.base import Artifact
from pipeline.stages.student_stage import soft_targets


def teacher_artifact(tmp_path: Path, plain: np.ndarray, flipped: np.ndarray) -> Artifact:
    np.save(tmp_path / "logits_train.npy", plain)
    np.save(tmp_path / "logits_train_flipped.npy", flipped)
    return Artifact(stage="teacher", recipe_id="t", path=tmp_path, meta={})


def softmax(z: np.ndarray, t: float) -> np.ndarray:
    e = np.exp(z / t - (z / t).max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_mirrored_images_get_the_mirrored_logits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    plain, flipped = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    kd = soft_targets(DistillationConfig(temperature=2.0, alpha=0.5), {"teacher": teacher_artifact(tmp_path, plain, flipped)}, 5)
    np.testing.assert_array_equal(kd["teacher_logits"], plain)
    np.testing.assert_array_equal(kd["teacher_logits_flipped"], flipped)
    assert kd["temperature"] == 2.0 and kd["alpha"] == 0.5


def test_flip_average_teaches_the_mean_of_both_views(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    plain, flipped = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    cfg = DistillationConfig(temperature=2.0, alpha=0.5, flip_average=True)
    kd = soft_targets(cfg, {"teacher": teacher_artifact(tmp_path, plain, flipped)}, 5)
    np.testing.assert_array_equal(kd["teacher_logits"], kd["teacher_logits_flipped"])
    expected = (softmax(plain, 2.0) + softmax(flipped, 2.0)) / 2
    np.testing.assert_allclose(softmax(kd["teacher_logits"], 2.0), expected, rtol=1e-5)

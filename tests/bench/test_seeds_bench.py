"""The multi-seed bench: seeds vary the students only, and the targets come from paired statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.bench import seeds_bench
from pipeline.config.loader import validate
from pipeline.config.profile import BuildProfile
from tests.helpers.profiles import TINY


def collected(distilled: np.ndarray, scratch: np.ndarray, shipped: np.ndarray) -> dict:
    seeds = list(range(len(distilled)))
    rows = [{"seed": s, "parameters": 70_000, "tflite_bytes": 100 * 1024} for s in seeds]
    return {
        "profile": "p", "ship": "int8", "seeds": seeds, "rows": rows, "teacher_accuracy": 0.95,
        "correct": {"distilled": distilled, "scratch": scratch, "shipped": shipped, "float32": distilled},
    }


def test_targets_are_means_over_seeds_with_intervals() -> None:
    rng = np.random.default_rng(0)
    scratch = rng.random((3, 10_000)) < 0.93
    distilled = scratch | (rng.random((3, 10_000)) < 0.15)  # about +1 point on every seed
    shipped = distilled & (rng.random((3, 10_000)) > 0.001)
    result = seeds_bench.analyse(collected(distilled, scratch, shipped))
    targets = result["targets"]
    assert targets["distilled_minus_scratch_points_ge_0.5"]["met"] is True
    assert targets["gain_ci_over_seeds_above_0"]["met"] and targets["gain_ci_bootstrap_images_above_0"]["met"]
    assert targets["int8_within_0.3_points_of_float32"]["met"] is True
    assert targets["int8_mean_accuracy_ge_0.940"]["value"] == pytest.approx(shipped.mean(axis=1).mean(), abs=1e-4)
    assert targets["parameters_lt_100k"]["met"] and targets["tflite_kb_le_120"]["value"] == 100.0


def test_a_gain_that_is_not_there_misses_the_target() -> None:
    rng = np.random.default_rng(1)
    scratch = rng.random((3, 10_000)) < 0.93
    result = seeds_bench.analyse(collected(scratch.copy(), scratch, scratch.copy()))
    assert result["targets"]["distilled_minus_scratch_points_ge_0.5"]["met"] is False
    assert result["targets"]["gain_ci_bootstrap_images_above_0"]["met"] is False


def test_the_first_seed_is_the_profiles_own() -> None:
    assert seeds_bench.seed_list(1234) == [1234, 1235, 1236]


@pytest.mark.slow
def test_seeds_train_new_students_on_one_teacher_and_one_split(isolated_results) -> None:
    profile = validate(BuildProfile, TINY, "tiny")
    payload = seeds_bench.run(profile, seeds=[5, 6])
    written = json.loads((isolated_results / "bench" / "seeds-tiny.json").read_text())
    assert written["seeds"] == [5, 6] and written["host"]["cpu_model"] is not None
    rows = payload["per_seed"]
    # four students (two seeds, distilled and scratch), each a different model ...
    students = sorted((isolated_results / "cache" / "distill").iterdir())
    logits = [np.load(path / "test_logits.npy") for path in students]
    assert len(logits) == 4 and all(not np.array_equal(a, b) for i, a in enumerate(logits) for b in logits[i + 1 :])
    # ... against one teacher and the same test images, which is what makes the comparison paired
    assert payload["distilled_vs_scratch"]["images"] == 300
    assert len(list((isolated_results / "cache" / "teacher").iterdir())) == 1
    # the profile's own seed is the plain build: building it again is all cache
    from pipeline.build import build_profile

    again = build_profile(profile)
    assert again.artifacts["student"].cached and again.artifacts["student"].metrics["test_accuracy"] == rows[0]["distilled"]

"""Distilled against scratch over several seeds: the evidence behind "distillation helps".

One build of a profile is one draw. This bench builds the profile's distilled student and its
scratch twin once per seed (``student.seed``: initialisation and batch order; the data split and
the teacher stay fixed, so every seed is scored on the same test images), quantizes each, and
compares them image by image (:mod:`pipeline.reports.paired_accuracy`). The teacher and every
seed's students are cached, so a rerun only recomputes the statistics.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from pipeline.bench.common import target, write_result
from pipeline.progress import NullProgress, Progress

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.config.profile import BuildProfile

log = logging.getLogger(__name__)

SEED_COUNT = 3


def seed_list(base: int, count: int = SEED_COUNT) -> list[int]:
    """The profile's own seed first, so seed 1 is exactly the default build and comes from its cache."""
    return [base + i for i in range(count)]


def _build_seed(profile, seed: int, progress: Progress):
    from pipeline.build import build_profile

    student = profile.student.model_copy(update={"seed": seed})
    return build_profile(profile.model_copy(update={"student": student}), progress=progress)


def _student_correct(artifact_dir, labels: np.ndarray) -> np.ndarray:
    return np.load(artifact_dir / "test_logits.npy", allow_pickle=False).argmax(axis=1) == labels


def collect(profile: "str | BuildProfile", seeds: Sequence[int] | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Build every seed (cached ones cost nothing) and gather per-image correctness per model."""
    from pipeline.config.profile import BuildProfile, load_profile
    from pipeline.stages.data_stage import Splits
    from pipeline.stages.evaluate_stage import PREDICTIONS

    progress = progress or NullProgress()
    profile = profile if isinstance(profile, BuildProfile) else load_profile(profile)
    profile_name = profile.name
    if not profile.distillation.enabled or not profile.distillation.scratch_baseline:
        raise ValueError(f"profile '{profile_name}' has no scratch baseline to compare its distilled student with")
    seeds = list(seeds or seed_list(profile.seed))
    ship = profile.quantization.ship
    rows: list[dict[str, Any]] = []
    distilled, scratch, shipped, float32 = [], [], [], []
    started = time.perf_counter()
    for seed in seeds:
        progress.detail(f"seed {seed} of {seeds}")
        result = _build_seed(profile, seed, progress)
        art = result.artifacts
        labels = Splits(art["data"], profile.preprocessing).raw("y_test")
        distilled.append(_student_correct(art["student"].path, labels))
        scratch.append(_student_correct(art["scratch"].path, labels))
        shipped.append(np.load(art[f"evaluate:{ship}"].path / PREDICTIONS) == labels)
        float32.append(distilled[-1] if "evaluate:float32" not in art else np.load(art["evaluate:float32"].path / PREDICTIONS) == labels)
        rows.append(
            {
                "seed": seed,
                "distilled": art["student"].metrics["test_accuracy"],
                "scratch": art["scratch"].metrics["test_accuracy"],
                ship: art[f"evaluate:{ship}"].metrics["accuracy"],
                "train_seconds": {"distilled": art["student"].seconds, "scratch": art["scratch"].seconds},
                "parameters": art["student"].metrics["parameters"],
                "tflite_bytes": art[f"evaluate:{ship}"].metrics["tflite_bytes"],
            }
        )
    return {
        "profile": profile_name,
        "ship": ship,
        "seeds": seeds,
        "rows": rows,
        "teacher_accuracy": art["teacher"].metrics["test_accuracy"],
        "correct": {"distilled": np.stack(distilled), "scratch": np.stack(scratch), "shipped": np.stack(shipped), "float32": np.stack(float32)},
        "seconds": round(time.perf_counter() - started, 1),
    }


def analyse(collected: dict[str, Any]) -> dict[str, Any]:
    """The statistics and targets of one profile's seeds (pure numpy: testable without training)."""
    from pipeline.reports.paired_accuracy import compare, summary

    c, seeds = collected["correct"], collected["seeds"]
    kd = compare(c["distilled"], c["scratch"], seeds)
    quant = compare(c["shipped"], c["float32"], seeds)
    shipped = summary(c["shipped"].mean(axis=1))
    rows = collected["rows"]
    return {
        "profile": collected["profile"],
        "ship": collected["ship"],
        "seeds": seeds,
        "teacher_accuracy": collected["teacher_accuracy"],
        "per_seed": rows,
        "distilled_vs_scratch": kd,
        "shipped_vs_float32": quant,
        "shipped_accuracy": shipped,
        "targets": {
            f"{collected['ship']}_mean_accuracy_ge_0.940": target(round(shipped["mean"], 4), 0.940, True),
            "distilled_minus_scratch_points_ge_0.5": target(round(100 * kd["gain_mean"], 3), 0.5, True),
            "gain_ci_over_seeds_above_0": {"value": [round(100 * v, 3) for v in kd["gain_ci_over_seeds"]], "met": kd["gain_ci_over_seeds"][0] > 0},
            "gain_ci_bootstrap_images_above_0": {
                "value": [round(100 * v, 3) for v in kd["gain_ci_bootstrap_images"]], "met": kd["gain_ci_bootstrap_images"][0] > 0,
            },
            f"{collected['ship']}_within_0.3_points_of_float32": target(round(-100 * quant["gain_mean"], 3), 0.3, False),
            "parameters_lt_100k": target(max(r["parameters"] for r in rows), 99_999, False),
            "tflite_kb_le_120": target(round(max(r["tflite_bytes"] for r in rows) / 1024, 1), 120, False),
        },
    }


def run(profile: "str | BuildProfile" = "default", progress: Progress | None = None, seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """Build, analyse and write ``results/bench/seeds-<profile>.json``."""
    collected = collect(profile, seeds, progress)
    payload = dict(analyse(collected), bench_seconds=collected["seconds"])
    write_result(f"seeds-{collected['profile']}", payload)
    return payload

"""Benchmark the default build: accuracy of every model, sizes, stage times, cached-rerun time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from calendar import timegm
from typing import Any, Iterable

from pipeline.bench.common import target, write_result
from pipeline.progress import Progress


def build_wall_seconds(artifacts: Iterable[Any]) -> float:
    """Wall time of building every artifact from nothing: the union of their run intervals.

    Stages that ran side by side (the two students) overlap and count once; stages reused from
    earlier runs keep the seconds they took then, laid end to end.
    """
    intervals = []
    for artifact in artifacts:
        finished = timegm(time.strptime(artifact.meta["finished"], "%Y-%m-%dT%H:%M:%SZ"))
        intervals.append((finished - artifact.seconds, float(finished)))
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def run(profile: str = "default", progress: Progress | None = None) -> dict[str, Any]:
    from pipeline.build import build_profile

    started = time.perf_counter()
    result = build_profile(profile, progress=progress)
    this_run = time.perf_counter() - started
    art = result.artifacts

    # A fully cached rerun, timed as a user would see it: a fresh process running the CLI.
    rerun_started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipeline", "build", "--profile", profile], capture_output=True, text=True, env=dict(os.environ))
    cached_rerun = time.perf_counter() - rerun_started
    if proc.returncode != 0:
        raise RuntimeError(f"cached rerun failed: {proc.stderr}")

    stage_seconds = {key: a.seconds for key, a in art.items()}
    full_build = build_wall_seconds(art.values())
    tflite = {
        mode: {
            "accuracy": art[f"evaluate:{mode}"].metrics["accuracy"],
            "agreement_with_keras": art[f"evaluate:{mode}"].metrics["agreement_with_keras"],
            "tflite_bytes": art[f"evaluate:{mode}"].metrics["tflite_bytes"],
        }
        for mode in result.profile.quantization.modes
    }
    student = art["student"].metrics
    accuracy = {
        "teacher": art["teacher"].metrics["test_accuracy"] if "teacher" in art else None,
        "scratch_student": art["scratch"].metrics["test_accuracy"] if "scratch" in art else None,
        "distilled_student": student["test_accuracy"],
    }
    int8 = tflite.get("int8", {})
    float_student = tflite.get("float32", {}).get("accuracy", student["test_accuracy"])
    payload = {
        "profile": profile,
        "bundle_id": result.bundle_dir.name if result.bundle_dir else None,
        "accuracy": accuracy,
        "tflite": tflite,
        "parameters": {
            "teacher": art["teacher"].metrics["parameters"] if "teacher" in art else None,
            "student": student["parameters"],
        },
        "macs": {"teacher": art["teacher"].metrics.get("macs") if "teacher" in art else None, "student": student["macs"]},
        "stage_seconds_when_built": stage_seconds,
        "full_build_seconds": round(full_build, 1),
        "this_run_seconds": round(this_run, 1),
        "cached_rerun_seconds": round(cached_rerun, 2),
        "targets": {
            "int8_accuracy_ge_0.93": target(int8.get("accuracy"), 0.93, True),
            "student_parameters_lt_100k": target(student["parameters"], 99_999, False),
            "int8_tflite_kb_le_120": target(int8["tflite_bytes"] / 1024 if int8 else None, 120, False),
            "int8_within_0.5_points_of_float": target(
                None if not int8 else round((float_student - int8["accuracy"]) * 100, 3), 0.5, False
            ),
            "distilled_beats_scratch": {
                "value": None if accuracy["scratch_student"] is None else accuracy["distilled_student"] - accuracy["scratch_student"],
                "met": None if accuracy["scratch_student"] is None else accuracy["distilled_student"] > accuracy["scratch_student"],
            },
            "full_build_minutes_le_20": target(round(full_build / 60, 2), 20, False),
            "cached_rerun_seconds_le_10": target(round(cached_rerun, 2), 10, False),
        },
    }
    write_result("build", payload)
    return payload

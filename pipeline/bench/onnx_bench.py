"""Benchmark ONNX import: a Keras ResNet teacher exported to ONNX comes back through onnx2tf intact.

The profile's Keras teacher (trained, or taken from the cache) is exported to a PyTorch-style NCHW
ONNX file, imported as teacher kind ``onnx-file``, and compared with onnxruntime on the whole test
split. A student is then distilled from the imported teacher with the same budget and seed as the
profile's student distilled from the Keras original, and the two accuracies are compared.
Targets (issue #7): top-1 agreement with onnxruntime ≥ 99.9 %, students within 0.5 points.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bench.common import target, write_result
from pipeline.progress import Progress


def _export_teacher(teacher_artifact, folder: Path) -> tuple[Path, float]:
    """The cached Keras teacher as NCHW ONNX, one file per teacher recipe (so reruns hit the cache)."""
    import keras

    from pipeline.onnx.exporter import export_keras
    from pipeline.stages.teacher_stage import MODEL_FILE

    path = folder / f"teacher-{teacher_artifact.recipe_id[:16]}.onnx"
    if path.is_file():
        return path, 0.0
    started = time.perf_counter()
    model = keras.saving.load_model(teacher_artifact.path / MODEL_FILE, compile=False)
    folder.mkdir(parents=True, exist_ok=True)
    from pipeline.fsutil import atomic_write_bytes

    atomic_write_bytes(path, export_keras(model, opset=17, layout="NCHW"))
    return path, time.perf_counter() - started


def run(profile: str = "default", progress: Progress | None = None) -> dict[str, Any]:
    from pipeline.build import build_profile
    from pipeline.config.profile import OnnxTeacherConfig, TeacherConfig, load_profile
    from pipeline.onnx.check import compare, onnx_session, run_onnx, to_layout
    from pipeline.onnx.importer import read_imported
    from pipeline.paths import results_dir
    from pipeline.stages.data_stage import Splits
    from pipeline.stages.onnx_import_stage import load_imported_teacher
    from pipeline.training.fit import predict_logits

    base = load_profile(profile)
    keras_run = build_profile(base, progress=progress, until="distill")
    if "teacher" not in keras_run.artifacts:
        raise ValueError(f"profile {profile!r} does not distil, so it has no teacher to export")
    onnx_path, export_seconds = _export_teacher(keras_run.artifacts["teacher"], results_dir() / "bench" / "onnx")

    data = keras_run.artifacts["data"]
    val_count = int(data.metrics["counts"]["x_val"])
    onnx_teacher = TeacherConfig(kind="onnx-file", path=str(onnx_path), onnx=OnnxTeacherConfig(layout="NCHW", check_samples=val_count))
    onnx_run = build_profile(base.model_copy(update={"teacher": onnx_teacher}), progress=progress, until="distill")
    art = onnx_run.artifacts

    # Agreement on the whole test split, beyond the stage's own check on validation images.
    splits = Splits(data, base.preprocessing)
    x_test, y_test = splits.model_input("x_test"), splits.raw("y_test")
    imported = read_imported(art["onnx_import"].path, dict(art["onnx_import"].metrics))
    reference = run_onnx(onnx_session(str(imported.onnx_path)), to_layout(x_test, "NCHW"))
    converted = predict_logits(load_imported_teacher(art["onnx_import"]), x_test)
    test_check = compare(reference, converted, "onnx2tf vs onnxruntime (test split)", labels=y_test)

    # The students see only the teachers' cached logits: how far apart those are bounds what the
    # ONNX path itself can change; any larger student gap is training variance.
    soft_target_gap = max(
        float(np.abs(np.load(keras_run.artifacts["teacher"].path / name) - np.load(art["teacher"].path / name)).max())
        for name in ("logits_train.npy", "logits_train_flipped.npy")
    )
    keras_student = keras_run.artifacts["student"].metrics["test_accuracy"]
    onnx_student = art["student"].metrics["test_accuracy"]
    gap_points = round(abs(onnx_student - keras_student) * 100, 3)
    payload = {
        "profile": profile,
        "onnx_file": str(onnx_path),
        "onnx_bytes": onnx_path.stat().st_size,
        "teacher": {
            "keras_test_accuracy": keras_run.artifacts["teacher"].metrics["test_accuracy"],
            "onnx_imported_test_accuracy": art["teacher"].metrics["test_accuracy"],
            "onnxruntime_test_accuracy": test_check.reference_top1,
            "parameters_keras": keras_run.artifacts["teacher"].metrics["parameters"],
            "parameters_onnx": imported.parameters,
            "macs_onnx": imported.macs,
        },
        "agreement_test_split": test_check.as_dict(),
        "agreement_stage_check": art["onnx_import"].metrics["check"],
        "students": {
            "distilled_from_keras_teacher": keras_student,
            "distilled_from_onnx_teacher": onnx_student,
            "difference_points": gap_points,
            "soft_targets_max_abs_difference": soft_target_gap,
            "test_count": int(len(y_test)),
        },
        "seconds": {
            "export_keras_to_onnx": round(export_seconds, 2),
            "onnx_import_stage": art["onnx_import"].seconds,
            "teacher_logits_stage": art["teacher"].seconds,
            "student_from_onnx_teacher": art["student"].seconds,
        },
        "versions": {"onnx2tf": imported.onnx2tf_version},
        "targets": {
            "onnx_teacher_top1_agreement_ge_0.999": target(test_check.top1_agreement, 0.999, True),
            "students_within_0.5_points": target(gap_points, 0.5, False),
            "max_abs_error_le_1e-3": target(float(np.float64(test_check.max_abs_error)), 1e-3, False),
        },
    }
    write_result("onnx", payload)
    return payload

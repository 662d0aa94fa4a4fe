"""Run a build profile through the staged pipeline: data → teacher → distill → prune → quantize → evaluate → package.

Every stage goes through the cache, so a rerun of an unchanged profile only re-reads results, and
changing one setting reruns only the stages downstream of it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pipeline.config.profile import BuildProfile, TeacherConfig, load_profile
from pipeline.errors import ConfigError
from pipeline.fsutil import canonical_json, sha256_bytes, sha256_file
from pipeline.paths import bundles_dir
from pipeline.progress import NullProgress, Progress
from pipeline.stages.base import Artifact, RunContext, Stage, run_stage
from pipeline.stages.data_stage import DataStage, DataStageConfig
from pipeline.stages.evaluate_stage import EvaluateStage, EvaluateStageConfig
from pipeline.stages.onnx_export_stage import OnnxExportStage, OnnxExportStageConfig
from pipeline.stages.onnx_import_stage import OnnxImportStage, onnx_import_config
from pipeline.stages.package_stage import PackageStage, PackageStageConfig, publish_bundle
from pipeline.stages.prune_stage import PruneStage, PruneStageConfig
from pipeline.stages.quantize_stage import QuantizeStage, QuantizeStageConfig
from pipeline.stages.side_by_side import StageJob, run_side_by_side
from pipeline.stages.student_stage import StudentStage, StudentStageConfig, teacher_input_names
from pipeline.stages.teacher_stage import TeacherStage, TeacherStageConfig

log = logging.getLogger(__name__)

STAGE_NAMES = ("data", "teacher", "distill", "prune", "quantize", "evaluate", "package")


@dataclass
class BuildResult:
    profile: BuildProfile
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    bundle_dir: Optional[Path] = None
    wall_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def stage_seconds(self) -> dict[str, float]:
        """Seconds each artifact took when it was built (0 for this run's cache hits)."""
        return {key: (0.0 if a.cached else a.seconds) for key, a in self.artifacts.items()}


def profile_sha256(profile: BuildProfile) -> str:
    return sha256_bytes(canonical_json(profile.model_dump(mode="json")).encode("utf-8"))


def _teacher_file_sha(profile: BuildProfile, teacher: TeacherConfig, key: str = "teacher") -> Optional[str]:
    if teacher.kind != "keras-file":
        return None
    path = Path(teacher.path or "")
    if not path.is_file():
        raise ConfigError(f"Build profile '{profile.name}': {key}.path {path} does not exist.")
    return sha256_file(path)


def build_profile(
    profile: BuildProfile | str | Path,
    progress: Progress | None = None,
    until: Optional[str] = None,
    max_jobs: Optional[int] = None,
) -> BuildResult:
    """Build ``profile`` (an object, a name like ``quick`` or a YAML path) up to stage ``until``.

    ``max_jobs`` caps how many independent stages run at once (default ``$EDGESHIP_JOBS`` or the
    number of cores; 1 runs everything in this process, in order).
    """
    if not isinstance(profile, BuildProfile):
        profile = load_profile(profile)
    if until is not None and until not in STAGE_NAMES:
        raise ConfigError(f"Unknown stage '{until}'. Stages: {', '.join(STAGE_NAMES)}.")
    ctx = RunContext(progress=progress or NullProgress())
    result = BuildResult(profile=profile)
    started = time.perf_counter()
    art = result.artifacts

    def record(key: str, artifact: Artifact) -> Artifact:
        art[key] = artifact
        state = "cached" if artifact.cached else f"{artifact.seconds:.1f}s"
        ctx.progress.note(f"[stage] {key:<18} {artifact.recipe_id[:12]}  {state}")
        return artifact

    def step(key: str, stage: Stage, **inputs: Artifact) -> Artifact:
        return record(key, run_stage(stage, inputs, ctx))

    def steps_side_by_side(jobs: list[StageJob]) -> dict[str, Artifact]:
        """Independent stages with the same budget (the two students) train concurrently."""
        built = run_side_by_side(jobs, ctx, max_jobs)
        return {job.key: record(job.key, built[job.key]) for job in jobs}

    def done(stage: str) -> bool:
        if until == stage:
            result.wall_seconds = time.perf_counter() - started
            return True
        return False

    pre = profile.preprocessing
    data = step("data", DataStage(DataStageConfig(dataset=profile.dataset, preprocessing=pre, seed=profile.seed)))
    if done("data"):
        return result

    distilling = profile.distillation.enabled
    teachers: dict[str, Artifact] = {}
    if distilling:
        configs = [profile.teacher] + [extra.teacher for extra in profile.distillation.extra_teachers]
        for key, teacher in zip(teacher_input_names(len(configs) - 1), configs):
            teacher_data = _teacher_data(step, profile, teacher, data)
            teachers[key] = step(key, _teacher_stage(profile, teacher, key), data=teacher_data, **_onnx_import(step, profile, teacher, key, teacher_data))
    if done("teacher"):
        return result

    def student_stage(distillation) -> StudentStage:
        return StudentStage(StudentStageConfig(student=profile.student, preprocessing=pre, distillation=distillation, seed=profile.seed))

    if distilling:
        students = [StageJob("student", student_stage(profile.distillation), {"data": data, **teachers})]
        if profile.distillation.scratch_baseline:
            students.append(StageJob("scratch", student_stage(None), {"data": data}))
        student = steps_side_by_side(students)["student"]
    else:
        student = step("student", student_stage(None), data=data)
    if done("distill"):
        return result

    if profile.pruning.method != "none" or profile.clustering.enabled:
        kd = profile.distillation if distilling and profile.pruning.distill else None
        prune_cfg = PruneStageConfig(pruning=profile.pruning, clustering=profile.clustering, preprocessing=pre, distillation=kd, seed=profile.seed)
        student = step("prune", PruneStage(prune_cfg), data=data, student=student, **(teachers if kd else {}))
    if done("prune"):
        return result

    q = profile.quantization
    for mode in q.modes:
        cfg = QuantizeStageConfig(
            mode=mode, calibration_samples=q.calibration_samples, int8_io=q.int8_io, preprocessing=pre,
            mixed=q.mixed if mode == "mixed" else None,
        )
        step(f"quantize:{mode}", QuantizeStage(cfg), data=data, student=student)
    if done("quantize"):
        return result

    for mode in q.modes:
        step(f"evaluate:{mode}", EvaluateStage(EvaluateStageConfig(preprocessing=pre)), data=data, student=student, tflite=art[f"quantize:{mode}"])
    if done("evaluate"):
        return result

    if profile.export.onnx:
        step("export_onnx", OnnxExportStage(OnnxExportStageConfig(export=profile.export, preprocessing=pre)), data=data, student=student)
    optional = {key: art[key] for key in ("teacher", "scratch", "export_onnx") if key in art}
    package_cfg = PackageStageConfig(profile_name=profile.name, profile_sha256=profile_sha256(profile), eval_count=profile.dataset.eval_count, preprocessing=pre)
    package = step(
        "package",
        PackageStage(package_cfg, optional_inputs=tuple(optional)),
        data=data, student=student, tflite=art[f"quantize:{q.ship}"], evaluate=art[f"evaluate:{q.ship}"], **optional,
    )
    result.bundle_dir = publish_bundle(package, bundles_dir())
    result.warnings = acceptance_warnings(profile, package.metrics["host_metrics"])
    result.wall_seconds = time.perf_counter() - started
    return result


def _teacher_stage(profile: BuildProfile, teacher: TeacherConfig, key: str) -> TeacherStage:
    pre = teacher.preprocessing or profile.preprocessing
    cfg = TeacherStageConfig(teacher=teacher, preprocessing=pre, seed=profile.seed, keras_file_sha256=_teacher_file_sha(profile, teacher, key))
    return TeacherStage(cfg)


def _onnx_import(step, profile: BuildProfile, teacher: TeacherConfig, key: str, data: Artifact) -> dict[str, Artifact]:
    """``{"onnx_import": artifact}`` for an ``onnx-file`` teacher (converted and checked once, cached)."""
    cfg = onnx_import_config(teacher, teacher.preprocessing or profile.preprocessing)
    if cfg is None:
        return {}
    return {"onnx_import": step("onnx_import" if key == "teacher" else f"onnx_import:{key}", OnnxImportStage(cfg), data=data)}


def _teacher_data(step, profile: BuildProfile, teacher: TeacherConfig, data: Artifact) -> Artifact:
    """The data artifact at the teacher's own input size (the student's when it has none).

    Splits depend on the seed only, so image i is the same picture at every size and the
    teacher's logits line up with the student's training images.
    """
    if teacher.preprocessing is None or teacher.preprocessing == profile.preprocessing:
        return data
    size = f"{teacher.preprocessing.height}x{teacher.preprocessing.width}x{teacher.preprocessing.channels}"
    cfg = DataStageConfig(dataset=profile.dataset, preprocessing=teacher.preprocessing, seed=profile.seed)
    return step(f"data:{size}", DataStage(cfg))


def acceptance_warnings(profile: BuildProfile, host_metrics: dict) -> list[str]:
    """Say which of the profile's acceptance thresholds the shipped model misses."""
    a = profile.acceptance
    warnings = []
    if a.min_accuracy is not None and host_metrics["accuracy"] < a.min_accuracy:
        warnings.append(f"accuracy {host_metrics['accuracy']:.4f} is below acceptance.min_accuracy {a.min_accuracy}")
    if a.max_tflite_kb is not None and host_metrics["tflite_bytes"] / 1024 > a.max_tflite_kb:
        warnings.append(f".tflite is {host_metrics['tflite_bytes'] / 1024:.1f} KB, above acceptance.max_tflite_kb {a.max_tflite_kb}")
    if a.max_parameters is not None and host_metrics["parameters"] > a.max_parameters:
        warnings.append(f"{host_metrics['parameters']} parameters, above acceptance.max_parameters {a.max_parameters}")
    return warnings

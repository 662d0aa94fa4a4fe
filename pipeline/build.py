"""Run a build profile through the staged pipeline: data → teacher → distill → quantize → evaluate → package.

Every stage goes through the cache, so a rerun of an unchanged profile only re-reads results, and
changing one setting reruns only the stages downstream of it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pipeline.config.profile import BuildProfile, load_profile
from pipeline.errors import ConfigError
from pipeline.fsutil import canonical_json, sha256_bytes, sha256_file
from pipeline.paths import bundles_dir
from pipeline.progress import NullProgress, Progress
from pipeline.stages.base import Artifact, RunContext, Stage, run_stage
from pipeline.stages.data_stage import DataStage, DataStageConfig
from pipeline.stages.evaluate_stage import EvaluateStage, EvaluateStageConfig
from pipeline.stages.package_stage import PackageStage, PackageStageConfig, publish_bundle
from pipeline.stages.quantize_stage import QuantizeStage, QuantizeStageConfig
from pipeline.stages.student_stage import StudentStage, StudentStageConfig
from pipeline.stages.teacher_stage import TeacherStage, TeacherStageConfig

log = logging.getLogger(__name__)

STAGE_NAMES = ("data", "teacher", "distill", "quantize", "evaluate", "package")


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


def _teacher_file_sha(profile: BuildProfile) -> Optional[str]:
    if profile.teacher.kind != "keras-file":
        return None
    path = Path(profile.teacher.path or "")
    if not path.is_file():
        raise ConfigError(f"Build profile '{profile.name}': teacher.path {path} does not exist.")
    return sha256_file(path)


def build_profile(
    profile: BuildProfile | str | Path,
    progress: Progress | None = None,
    until: Optional[str] = None,
) -> BuildResult:
    """Build ``profile`` (an object, a name like ``quick`` or a YAML path) up to stage ``until``."""
    if not isinstance(profile, BuildProfile):
        profile = load_profile(profile)
    if until is not None and until not in STAGE_NAMES:
        raise ConfigError(f"Unknown stage '{until}'. Stages: {', '.join(STAGE_NAMES)}.")
    ctx = RunContext(progress=progress or NullProgress())
    result = BuildResult(profile=profile)
    started = time.perf_counter()
    art = result.artifacts

    def step(key: str, stage: Stage, **inputs: Artifact) -> Artifact:
        art[key] = run_stage(stage, inputs, ctx)
        state = "cached" if art[key].cached else f"{art[key].seconds:.1f}s"
        ctx.progress.note(f"[stage] {key:<18} {art[key].recipe_id[:12]}  {state}")
        return art[key]

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
    teacher = None
    if distilling:
        teacher_cfg = TeacherStageConfig(teacher=profile.teacher, preprocessing=pre, seed=profile.seed, keras_file_sha256=_teacher_file_sha(profile))
        teacher = step("teacher", TeacherStage(teacher_cfg), data=data)
    if done("teacher"):
        return result

    def student_stage(distillation) -> StudentStage:
        return StudentStage(StudentStageConfig(student=profile.student, preprocessing=pre, distillation=distillation, seed=profile.seed))

    if distilling:
        student = step("student", student_stage(profile.distillation), data=data, teacher=teacher)
        if profile.distillation.scratch_baseline:
            step("scratch", student_stage(None), data=data)
    else:
        student = step("student", student_stage(None), data=data)
    if done("distill"):
        return result

    q = profile.quantization
    for mode in q.modes:
        cfg = QuantizeStageConfig(mode=mode, calibration_samples=q.calibration_samples, int8_io=q.int8_io, preprocessing=pre)
        step(f"quantize:{mode}", QuantizeStage(cfg), data=data, student=student)
    if done("quantize"):
        return result

    for mode in q.modes:
        step(f"evaluate:{mode}", EvaluateStage(EvaluateStageConfig(preprocessing=pre)), data=data, student=student, tflite=art[f"quantize:{mode}"])
    if done("evaluate"):
        return result

    optional = {key: art[key] for key in ("teacher", "scratch") if key in art}
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

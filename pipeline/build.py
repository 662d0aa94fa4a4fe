"""Run a build profile through the staged pipeline: data → teacher → distill → prune → quantize → evaluate → package.

Every stage goes through the cache, so a rerun of an unchanged profile only re-reads results, and
changing one setting reruns only the stages downstream of it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from pipeline.config.profile import BuildProfile, DistillationConfig, TeacherConfig, load_profile
from pipeline.errors import ConfigError
from pipeline.execute.executor import Executor
from pipeline.execute.stage_runner import StageJob, StageRunner
from pipeline.fsutil import canonical_json, sha256_bytes, sha256_file
from pipeline.paths import bundles_dir
from pipeline.progress import NullProgress, Progress
from pipeline.stages.base import Artifact, RunContext, Stage
from pipeline.stages.data_stage import DataStage, DataStageConfig
from pipeline.stages.evaluate_stage import EvaluateStage, EvaluateStageConfig
from pipeline.stages.onnx_export_stage import OnnxExportStage, OnnxExportStageConfig
from pipeline.stages.onnx_import_stage import OnnxImportStage, onnx_import_config
from pipeline.stages.package_stage import PackageStage, PackageStageConfig, publish_bundle
from pipeline.stages.prune_stage import PruneStage, PruneStageConfig
from pipeline.stages.quantize_stage import QuantizeStage, QuantizeStageConfig
from pipeline.stages.student_stage import StudentStage, StudentStageConfig, teacher_input_names
from pipeline.stages.teacher_stage import TeacherStage, TeacherStageConfig

log = logging.getLogger(__name__)


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


@dataclass
class _Run:
    """What the steps of one build share: the run context, the result so far and the job cap."""

    ctx: RunContext
    result: BuildResult
    runner: StageRunner
    teachers: dict[str, Artifact] = field(default_factory=dict)
    distill_follows: bool = True  # false when ``until`` stops the build before the students

    @property
    def profile(self) -> BuildProfile:
        return self.result.profile

    @property
    def art(self) -> dict[str, Artifact]:
        return self.result.artifacts

    @property
    def student(self) -> Artifact:
        """The student downstream stages take: the pruned one once the prune stage ran."""
        return self.art.get("prune") or self.art["student"]


def _record(run: _Run, key: str, artifact: Artifact) -> Artifact:
    """Keep ``artifact`` under ``key`` and show whether it came from the cache."""
    run.art[key] = artifact
    state = "cached" if artifact.cached else f"{artifact.seconds:.1f}s"
    run.ctx.progress.note(f"[stage] {key:<18} {artifact.recipe_id[:12]}  {state}")
    return artifact


def _step(run: _Run, key: str, stage: Stage, **inputs: Artifact) -> Artifact:
    """Run one stage through the cache (here, or on the cluster if it trains and one is given)."""
    return _record(run, key, run.runner.run(stage, inputs))


def _side_by_side(run: _Run, jobs: list[StageJob]) -> dict[str, Artifact]:
    """Independent stages with the same budget (the two students) train concurrently."""
    built = run.runner.run_all(jobs)
    return {job.key: _record(run, job.key, built[job.key]) for job in jobs}


def _data(run: _Run) -> None:
    """Load and split the dataset once; every later stage reads it from the cache."""
    p = run.profile
    _step(run, "data", DataStage(DataStageConfig(dataset=p.dataset, preprocessing=p.preprocessing, seed=p.seed)))


def _teachers(run: _Run) -> None:
    """Every teacher, each on data at its own input size (none unless the profile distils)."""
    p = run.profile
    if not p.distillation.enabled:
        return
    configs = [p.teacher] + [extra.teacher for extra in p.distillation.extra_teachers]
    _scratch_during_teacher(run, configs)
    for key, teacher in zip(teacher_input_names(len(configs) - 1), configs):
        teacher_data = _teacher_data(run, teacher)
        stage = _teacher_stage(p, teacher, key)
        run.teachers[key] = _step(run, key, stage, data=teacher_data, **_onnx_import(run, teacher, key, teacher_data))


def _scratch_during_teacher(run: _Run, teachers: list[TeacherConfig]) -> None:
    """The scratch twin needs no teacher, so on this machine it trains while a teacher does.

    It runs in a worker process with one thread beside the in-process teacher; the distilled
    student then trains alone on every core while the scratch finishes. Serially, the core the
    teacher used poorly and the teacher's logit caching were time no student trained
    (docs/RESULTS.md, "Where a build's time goes").
    """
    p = run.profile
    if not (p.distillation.scratch_baseline and run.distill_follows) or any(t.kind != "resnet" for t in teachers):
        return
    data = run.art["data"]
    if all(teacher.preprocessing is None or teacher.preprocessing == p.preprocessing for teacher in teachers):
        if run.runner.is_cached(_teacher_stage(p, teachers[0], "teacher"), {"data": data}):
            return  # nothing to overlap: the students train side by side as usual
    run.runner.start_early(StageJob("scratch", _student_stage(p, None), {"data": data}))


def _student_stage(profile: BuildProfile, distillation: Optional[DistillationConfig]) -> StudentStage:
    """The distilled student and its scratch baseline differ only in ``distillation``."""
    seed = profile.seed if profile.student.seed is None else profile.student.seed
    cfg = StudentStageConfig(student=profile.student, preprocessing=profile.preprocessing, distillation=distillation, seed=seed)
    return StudentStage(cfg)


def _students(run: _Run) -> None:
    """The student, distilled from the teachers (with its scratch baseline beside it) or not."""
    p, data = run.profile, run.art["data"]
    if not p.distillation.enabled:
        _step(run, "student", _student_stage(p, None), data=data)
        return
    jobs = [StageJob("student", _student_stage(p, p.distillation), {"data": data, **run.teachers})]
    if p.distillation.scratch_baseline:
        jobs.append(StageJob("scratch", _student_stage(p, None), {"data": data}))
    _side_by_side(run, jobs)


def _prune(run: _Run) -> None:
    """Prune and/or cluster the student when the profile asks, fine-tuning on the teachers if it distils."""
    p = run.profile
    if p.pruning.method == "none" and not p.clustering.enabled:
        return
    kd = p.distillation if p.distillation.enabled and p.pruning.distill else None
    cfg = PruneStageConfig(pruning=p.pruning, clustering=p.clustering, preprocessing=p.preprocessing, distillation=kd, seed=p.seed)
    _step(run, "prune", PruneStage(cfg), data=run.art["data"], student=run.student, **(run.teachers if kd else {}))


def _quantize(run: _Run) -> None:
    """One .tflite per quantization mode the profile lists."""
    q, student = run.profile.quantization, run.student
    for mode in q.modes:
        cfg = QuantizeStageConfig(
            mode=mode, calibration_samples=q.calibration_samples, int8_io=q.int8_io, preprocessing=run.profile.preprocessing,
            mixed=q.mixed if mode == "mixed" else None,
        )
        _step(run, f"quantize:{mode}", QuantizeStage(cfg), data=run.art["data"], student=student)


def _evaluate(run: _Run) -> None:
    """Each .tflite on the whole test split, so the modes compare on the same images."""
    cfg = EvaluateStageConfig(preprocessing=run.profile.preprocessing)
    student = run.student
    for mode in run.profile.quantization.modes:
        _step(run, f"evaluate:{mode}", EvaluateStage(cfg), data=run.art["data"], student=student, tflite=run.art[f"quantize:{mode}"])


def _package(run: _Run) -> None:
    """Export ONNX if asked, package the shipped mode and publish the bundle with its warnings."""
    p, art = run.profile, run.art
    student = run.student
    if p.export.onnx:
        cfg = OnnxExportStageConfig(export=p.export, preprocessing=p.preprocessing)
        _step(run, "export_onnx", OnnxExportStage(cfg), data=art["data"], student=student)
    optional = {key: art[key] for key in ("teacher", "scratch", "export_onnx") if key in art}
    package_cfg = PackageStageConfig(profile_name=p.name, profile_sha256=profile_sha256(p), eval_count=p.dataset.eval_count, preprocessing=p.preprocessing)
    ship = p.quantization.ship
    package = _step(
        run, "package", PackageStage(package_cfg, optional_inputs=tuple(optional)),
        data=art["data"], student=student, tflite=art[f"quantize:{ship}"], evaluate=art[f"evaluate:{ship}"], **optional,
    )
    run.result.bundle_dir = publish_bundle(package, bundles_dir())
    run.result.warnings = acceptance_warnings(p, package.metrics["host_metrics"])


# The build in order; ``until`` (``edgeship stage NAME``) stops after the step of that name.
_STEPS: tuple[tuple[str, Callable[[_Run], None]], ...] = (
    ("data", _data),
    ("teacher", _teachers),
    ("distill", _students),
    ("prune", _prune),
    ("quantize", _quantize),
    ("evaluate", _evaluate),
    ("package", _package),
)
STAGE_NAMES = tuple(name for name, _ in _STEPS)


def build_profile(
    profile: BuildProfile | str | Path,
    progress: Progress | None = None,
    until: Optional[str] = None,
    max_jobs: Optional[int] = None,
    executor: Optional[Executor] = None,
) -> BuildResult:
    """Build ``profile`` (an object, a name like ``quick`` or a YAML path) up to stage ``until``.

    ``max_jobs`` caps how many independent stages run at once (default ``$EDGESHIP_JOBS`` or the
    number of cores; 1 runs everything in this process, in order). ``executor`` (a cluster's)
    runs the training stages; without one they run on this machine.
    """
    if not isinstance(profile, BuildProfile):
        profile = load_profile(profile)
    if until is not None and until not in STAGE_NAMES:
        raise ConfigError(f"Unknown stage '{until}'. Stages: {', '.join(STAGE_NAMES)}.")
    result = BuildResult(profile=profile)
    ctx = RunContext(progress=progress or NullProgress())
    distill_follows = until is None or STAGE_NAMES.index(until) >= STAGE_NAMES.index("distill")
    run = _Run(ctx=ctx, result=result, runner=StageRunner(ctx, executor, max_jobs), distill_follows=distill_follows)
    started = time.perf_counter()
    try:
        for name, step in _STEPS:
            step(run)
            if name == until:
                break
    except KeyboardInterrupt:  # Ctrl-C reached the workers too: they clean up as they stop
        run.runner.finish_early(interrupted=True)
        raise
    except BaseException:
        run.runner.finish_early(failed=True)
        raise
    run.runner.finish_early()
    result.wall_seconds = time.perf_counter() - started
    return result


def _teacher_stage(profile: BuildProfile, teacher: TeacherConfig, key: str) -> TeacherStage:
    """The teacher stage at the teacher's own input size, with a keras-file teacher's content hash."""
    pre = teacher.preprocessing or profile.preprocessing
    cfg = TeacherStageConfig(teacher=teacher, preprocessing=pre, seed=profile.seed, keras_file_sha256=_teacher_file_sha(profile, teacher, key))
    return TeacherStage(cfg)


def _onnx_import(run: _Run, teacher: TeacherConfig, key: str, data: Artifact) -> dict[str, Artifact]:
    """``{"onnx_import": artifact}`` for an ``onnx-file`` teacher (converted and checked once, cached)."""
    cfg = onnx_import_config(teacher, teacher.preprocessing or run.profile.preprocessing)
    if cfg is None:
        return {}
    return {"onnx_import": _step(run, "onnx_import" if key == "teacher" else f"onnx_import:{key}", OnnxImportStage(cfg), data=data)}


def _teacher_data(run: _Run, teacher: TeacherConfig) -> Artifact:
    """The data artifact at the teacher's own input size (the student's when it has none).

    Splits depend on the seed only, so image i is the same picture at every size and the
    teacher's logits line up with the student's training images.
    """
    p = run.profile
    if teacher.preprocessing is None or teacher.preprocessing == p.preprocessing:
        return run.art["data"]
    size = f"{teacher.preprocessing.height}x{teacher.preprocessing.width}x{teacher.preprocessing.channels}"
    cfg = DataStageConfig(dataset=p.dataset, preprocessing=teacher.preprocessing, seed=p.seed)
    return _step(run, f"data:{size}", DataStage(cfg))


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

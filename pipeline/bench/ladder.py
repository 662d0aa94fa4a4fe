"""A controlled slowdown ladder: bundles of the SAME model that do a known amount of extra work.

The regression-gate bench needs candidates that are really slower, not numbers edited in a store
or a sleep in the agent. Each rung widens one layer of the profile's trained student by extra
channels whose outgoing weights are zero (:mod:`pipeline.bench.widen`), so its predictions are
unchanged while its MACs rise by a chosen fraction of the whole model's. The widened student then
goes through the profile's own quantize, evaluate and package stages, so the bundle is a normal,
verified one with the profile's calibration data and eval set; its manifest's profile name says
which rung it is (``quick+macs10``), which also gives every rung its own bundle id.

Every step runs through the stage cache: a second ``ladder()`` or ``creep()`` rebuilds nothing.
The bench measures the true latency ratios on devices; MACs are the knob, not the promise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from pipeline.build import BuildResult, build_profile, profile_sha256
from pipeline.config.profile import BuildProfile, MixedPrecisionConfig, PreprocessingConfig, Strict, load_profile
from pipeline.errors import EdgeshipError
from pipeline.paths import bundles_dir
from pipeline.progress import NullProgress, Progress
from pipeline.stages.base import Artifact, RunContext, Stage, run_stage
from pipeline.stages.data_stage import Splits
from pipeline.stages.evaluate_stage import PREDICTIONS, EvaluateStage, EvaluateStageConfig
from pipeline.stages.package_stage import PackageStage, PackageStageConfig, publish_bundle
from pipeline.stages.quantize_stage import QuantizeStage, QuantizeStageConfig
from pipeline.stages.student_stage import MODEL_FILE, load_student

log = logging.getLogger(__name__)

LADDER = (0.05, 0.10, 0.20, 0.40)


@dataclass(frozen=True)
class Rung:
    """One bundle of the ladder: how much extra work was asked for and how much it really does."""

    label: str  # "+10%", or "night 3" in a creep series
    target_extra: float  # asked-for extra MACs, as a fraction of the base model's
    extra_macs: float  # achieved: macs / base_macs - 1 (channels are whole, so it differs slightly)
    macs: int
    base_macs: int
    bundle_dir: Path
    layer: Optional[str] = None  # the widened layer (None for the base model itself)
    extra_channels: int = 0

    @property
    def bundle_id(self) -> str:
        return self.bundle_dir.name


class WidenStageConfig(Strict):
    layer: str
    extra_channels: int
    preprocessing: PreprocessingConfig


class WidenStage(Stage[WidenStageConfig]):
    """The student with ``extra_channels`` more filters in ``layer``, predicting exactly as before.

    Not registered with the stage registry: it is a bench tool, not a step of a build profile.
    """

    name = "widen"
    description = "Widen one layer of the student by zero-output channels (slowdown ladder)."
    version = 1
    inputs = ("data", "student")

    def run(self, inputs: Mapping[str, Artifact], out: Path, ctx: RunContext) -> dict[str, Any]:
        from pipeline.bench.widen import plan_for, widen
        from pipeline.models.cost import count_macs, count_parameters
        from pipeline.training.fit import predict_logits

        cfg = self.config
        model = load_student(inputs["student"])
        plan = plan_for(model, cfg.layer)
        if plan is None:
            raise EdgeshipError(f"Slowdown ladder: layer '{cfg.layer}' of student '{model.name}' cannot be widened safely.")
        wide = widen(model, plan, cfg.extra_channels)
        data = Splits(inputs["data"], cfg.preprocessing)
        logits = predict_logits(wide, data.model_input("x_test"))
        base_logits = np.load(inputs["student"].path / "test_logits.npy")
        _check_logits(logits, base_logits, f"student '{model.name}' widened at {plan.producer} by {cfg.extra_channels} channels")
        np.save(out / "test_logits.npy", logits)
        wide.save(out / MODEL_FILE)
        base_macs, macs = count_macs(model), count_macs(wide)
        metrics = dict(inputs["student"].metrics)
        metrics.update(
            parameters=count_parameters(wide),
            macs=macs,
            widened={
                "layer": plan.producer,
                "channels": plan.channels,
                "extra_channels": cfg.extra_channels,
                "consumers": list(plan.consumers),
                "base_macs": base_macs,
                "extra_macs": macs / base_macs - 1,
                "keras_max_abs_logit_change": float(np.max(np.abs(logits - base_logits))),
                "keras_top1_changes": int(np.sum(logits.argmax(1) != base_logits.argmax(1))),
            },
        )
        return metrics


# Float noise only: the widened convs may sum in another order (oneDNN/XNNPack blocking).
LOGIT_TOLERANCE = 1e-4


def _check_logits(logits: np.ndarray, base: np.ndarray, what: str) -> None:
    """Refuse (before anything is cached) a widening that changed what the Keras model computes."""
    change = float(np.max(np.abs(logits - base))) if len(base) else 0.0
    if change > LOGIT_TOLERANCE * max(1.0, float(np.max(np.abs(base)))):
        raise EdgeshipError(
            f"Slowdown ladder: {what} changes its test logits by up to {change:.3g}; zero-weight channels must change "
            "nothing, so the widening is broken (pipeline/bench/widen.py)."
        )


def _student(result: BuildResult) -> Artifact:
    """The student the shipped bundle was made from (the pruned one when the profile prunes)."""
    return result.artifacts.get("prune") or result.artifacts["student"]


def _rung_name(profile: BuildProfile, target: float) -> str:
    return f"{profile.name}+macs{round(target * 100, 2):g}"


def _package_widened(result: BuildResult, widened: Artifact, name: str, ctx: RunContext) -> tuple[Artifact, Artifact]:
    """Quantize, evaluate and package ``widened`` exactly as the build ships its own student."""
    p, art = result.profile, result.artifacts
    q, mode = p.quantization, p.quantization.ship
    quantize = QuantizeStageConfig(
        mode=mode, calibration_samples=q.calibration_samples, int8_io=q.int8_io, preprocessing=p.preprocessing,
        mixed=(q.mixed or MixedPrecisionConfig()) if mode == "mixed" else None,
    )
    tflite = run_stage(QuantizeStage(quantize), {"data": art["data"], "student": widened}, ctx)
    evaluate = run_stage(EvaluateStage(EvaluateStageConfig(preprocessing=p.preprocessing)), {"data": art["data"], "student": widened, "tflite": tflite}, ctx)
    optional = {key: art[key] for key in ("teacher", "scratch") if key in art}
    package_cfg = PackageStageConfig(profile_name=name, profile_sha256=profile_sha256(p), eval_count=p.dataset.eval_count, preprocessing=p.preprocessing)
    package = run_stage(
        PackageStage(package_cfg, optional_inputs=tuple(optional)), {"data": art["data"], "student": widened, "tflite": tflite, "evaluate": evaluate, **optional}, ctx
    )
    return package, evaluate


def _check_predictions(result: BuildResult, evaluate: Artifact, name: str) -> None:
    """The widened .tflite must give the base model's top-1 on every test image (see widen.py why)."""
    base = np.load(result.artifacts[f"evaluate:{result.profile.quantization.ship}"].path / PREDICTIONS)
    wide = np.load(evaluate.path / PREDICTIONS)
    changed = int(np.sum(base != wide))
    if changed:
        raise EdgeshipError(
            f"Slowdown ladder: bundle '{name}' ({evaluate.path}) changes the top-1 prediction of {changed} of {len(base)} "
            "test images; zero-weight channels must not change predictions, so the widening is broken."
        )


class _Ladder:
    """One profile's base build and widening plan, shared by every rung built from it."""

    def __init__(self, profile: str | BuildProfile, layer: Optional[str], progress: Optional[Progress]) -> None:
        from pipeline.bench.widen import choose_plan, plan_for
        from pipeline.models.cost import count_macs

        self.ctx = RunContext(progress=progress or NullProgress())
        base = profile if isinstance(profile, BuildProfile) else load_profile(profile)
        self.result = build_profile(base, progress=self.ctx.progress)
        model = load_student(_student(self.result))
        self.base_macs = count_macs(model)
        try:
            plan = choose_plan(model) if layer is None else plan_for(model, layer)
        except ValueError as exc:
            raise EdgeshipError(f"Slowdown ladder for profile '{base.name}': {exc}.") from None
        if plan is None:
            raise EdgeshipError(f"Slowdown ladder: layer '{layer}' of student '{model.name}' ({base.name}) cannot be widened safely.")
        self.plan = plan

    def rung(self, target: float, label: str) -> Rung:
        from pipeline.bench.widen import channels_for

        extra = channels_for(self.plan, self.base_macs, target)
        if extra == 0:
            assert self.result.bundle_dir is not None
            return Rung(label, target, 0.0, self.base_macs, self.base_macs, self.result.bundle_dir)
        p = self.result.profile
        name = _rung_name(p, target)
        cfg = WidenStageConfig(layer=self.plan.producer, extra_channels=extra, preprocessing=p.preprocessing)
        widened = run_stage(WidenStage(cfg), {"data": self.result.artifacts["data"], "student": _student(self.result)}, self.ctx)
        package, evaluate = _package_widened(self.result, widened, name, self.ctx)
        _check_predictions(self.result, evaluate, name)  # before publishing: a broken rung never ships
        bundle = publish_bundle(package, bundles_dir())
        macs = int(widened.metrics["macs"])
        self.ctx.progress.note(f"[ladder] {label:<10} {name}: {self.plan.producer} +{extra} channels, {macs / self.base_macs - 1:+.2%} MACs -> {bundle.name}")
        return Rung(label, target, macs / self.base_macs - 1, macs, self.base_macs, bundle, self.plan.producer, extra)


def ladder(
    profile: str | BuildProfile = "quick", extra: Sequence[float] = LADDER, progress: Optional[Progress] = None, layer: Optional[str] = None,
) -> list[Rung]:
    """One rung per fraction in ``extra`` (0.10 = +10 % MACs), built or read from the cache.

    ``layer`` names the conv to widen; by default :func:`pipeline.bench.widen.choose_plan` picks
    the one nearest the classifier whose one-channel step is at most 0.5 % of the model's MACs (so
    every rung lands within 0.25 percentage points) and whose consumers are big enough that every
    quantization mode treats them alike before and after widening.
    """
    builder = _Ladder(profile, layer, progress)
    return [builder.rung(target, f"+{round(target * 100, 2):g}%") for target in extra]


def creep(
    profile: str | BuildProfile = "quick", nights: int = 7, per_night: float = 0.02, progress: Optional[Progress] = None,
    layer: Optional[str] = None,
) -> list[Rung]:
    """A slow creep: night n does ``(1 + per_night) ** n - 1`` extra MACs, nights 0..``nights``
    (night 0 is the base bundle itself)."""
    if nights < 0:
        raise ValueError(f"nights must not be negative, got {nights}")
    builder = _Ladder(profile, layer, progress)
    return [builder.rung((1 + per_night) ** n - 1, f"night {n}") for n in range(nights + 1)]

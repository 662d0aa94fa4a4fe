"""Stage ``distill``: train the compact student, with the teacher's soft targets or without.

The scratch baseline is this same stage with ``distillation: null`` and no teacher input, so it
gets exactly the same architecture, data, augmentation and epoch budget as the distilled student.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from pipeline.config.profile import DistillationConfig, PreprocessingConfig, Strict, StudentConfig
from pipeline.stages.base import Artifact, RecipeIgnore, RunContext, Stage
from pipeline.stages.data_stage import Splits
from pipeline.stages.registry import register_stage

MODEL_FILE = "student.keras"

# Distillation keys that do not change what a student learns (the distill and prune stages').
KD_RECIPE_IGNORES = (
    # ``scratch_baseline`` and ``enabled`` only decide which stages run, so a sweep that skips the
    # scratch baseline still reuses the default build's distilled student.
    RecipeIgnore("distillation.scratch_baseline"),
    RecipeIgnore("distillation.enabled"),
    # Options added later, left out while they hold the value they had before they existed, so
    # adding them did not change every recipe id and throw away a cache of trained models.
    RecipeIgnore("distillation.teacher_weight", default=1.0),
    RecipeIgnore("distillation.extra_teachers", default=[]),
    RecipeIgnore("distillation.flip_average", default=False),
)

# ``student.seed`` is already in the stage's own ``seed`` (the effective one), so a student seeded
# explicitly with the profile's seed is the same recipe as one that is not.
STUDENT_RECIPE_IGNORES = KD_RECIPE_IGNORES + (RecipeIgnore("student.seed"),)


class StudentStageConfig(Strict):
    student: StudentConfig
    preprocessing: PreprocessingConfig
    distillation: Optional[DistillationConfig]
    seed: int


@register_stage
class StudentStage(Stage[StudentStageConfig]):
    name = "distill"
    description = "Train the compact student, on the teachers' soft targets or from scratch."
    version = 3  # 2: BatchNorm momentum 0.9; 3: BatchNorm trains through the fused kernel
    cores = 1
    recipe_ignores = STUDENT_RECIPE_IGNORES

    def __init__(self, config: StudentStageConfig) -> None:
        super().__init__(config)
        # An instance attribute on purpose: the recipe id must include the teachers only when used.
        kd = config.distillation
        self.inputs = ("data",) if kd is None else ("data",) + teacher_input_names(len(kd.extra_teachers))

    @property
    def label(self) -> str:
        return "distilled student" if self.config.distillation is not None else "scratch student"

    def run(self, inputs: Mapping[str, Artifact], out: Path, ctx: RunContext) -> dict[str, Any]:
        from pipeline.models.cost import count_macs, count_parameters
        from pipeline.models.registry import build_student
        from pipeline.training.fit import predict_logits, train_classifier

        cfg = self.config
        data = Splits(inputs["data"], cfg.preprocessing)
        classes = len(data.class_names)
        model = build_student(cfg.student.family, data.input_shape, classes, cfg.student.width_multiplier)
        kd: dict[str, Any] = {}
        if cfg.distillation is not None:
            kd = soft_targets(cfg.distillation, inputs, len(data.raw("y_train")))
        metrics = train_classifier(
            model, data.model_input("x_train"), data.raw("y_train"), classes, cfg.student.training,
            seed=cfg.seed, label=self.label, x_val=data.model_input("x_val"), y_val=data.raw("y_val"),
            progress=ctx.progress, **kd,
        )
        test_logits = predict_logits(model, data.model_input("x_test"))
        np.save(out / "test_logits.npy", test_logits)
        model.save(out / MODEL_FILE)
        metrics.update(
            model=model.name,
            family=cfg.student.family,
            width_multiplier=cfg.student.width_multiplier,
            parameters=count_parameters(model),
            macs=count_macs(model),
            test_accuracy=float(np.mean(test_logits.argmax(1) == data.raw("y_test"))),
        )
        return metrics


def teacher_input_names(extra: int) -> tuple[str, ...]:
    """``teacher`` then ``teacher_1`` ... for multi-teacher distillation."""
    return ("teacher",) + tuple(f"teacher_{i}" for i in range(1, extra + 1))


def soft_targets(kd: DistillationConfig, inputs: Mapping[str, Artifact], train_count: int) -> dict[str, Any]:
    """The train_classifier KD arguments, averaging the soft targets of every teacher by weight.

    With ``flip_average`` each teacher's view of the mirrored image counts as one more teacher of
    half its weight, so an image and its mirror get the same, test-time-augmented soft target.
    """
    from pipeline.training.ensemble import ensemble_logits

    names = teacher_input_names(len(kd.extra_teachers))
    weights = [kd.teacher_weight] + [t.weight for t in kd.extra_teachers]
    plain, flipped = [], []
    for name in names:
        path = inputs[name].path
        plain.append(np.load(path / "logits_train.npy"))
        flipped.append(np.load(path / "logits_train_flipped.npy"))
        if len(plain[-1]) != train_count:
            raise ValueError(f"{name} has logits for {len(plain[-1])} training images, the data split has {train_count}")
    if kd.flip_average:
        both = ensemble_logits(plain + flipped, [w / 2 for w in weights] * 2, kd.temperature)
        return dict(teacher_logits=both, teacher_logits_flipped=both, temperature=kd.temperature, alpha=kd.alpha)
    return dict(
        teacher_logits=ensemble_logits(plain, weights, kd.temperature),
        teacher_logits_flipped=ensemble_logits(flipped, weights, kd.temperature),
        temperature=kd.temperature,
        alpha=kd.alpha,
    )


def load_student(artifact: Artifact):
    import keras

    return keras.models.load_model(artifact.path / MODEL_FILE, compile=False)

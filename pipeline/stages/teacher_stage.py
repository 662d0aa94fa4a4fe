"""Stage ``teacher``: train (or load) the teacher and cache its logits once.

Logits are stored for every training image as-is and mirrored, so distillation can use flips and
still look up exact soft targets instead of re-running the teacher every epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipeline.config.profile import PreprocessingConfig, Strict, TeacherConfig
from pipeline.stages.base import Artifact, RecipeIgnore, RunContext, Stage
from pipeline.stages.data_stage import Splits
from pipeline.stages.registry import register_stage

MODEL_FILE = "teacher.keras"


class TeacherStageConfig(Strict):
    teacher: TeacherConfig
    preprocessing: PreprocessingConfig
    seed: int
    keras_file_sha256: str | None = None  # content of a user-supplied teacher, so edits invalidate the cache


@register_stage
class TeacherStage(Stage[TeacherStageConfig]):
    name = "teacher"
    description = "Train (or load) the teacher and cache its logits for every training image."
    version = 4  # 2: BatchNorm momentum 0.9; 3: teacher.shift, default 0 (was a fixed 2); 4: fused BatchNorm
    cores = 1
    inputs = ("data",)
    recipe_ignores = (
        # The effective input size is ``preprocessing`` below; teacher.preprocessing only chose it.
        RecipeIgnore("teacher.preprocessing"),
        # Keeps the recipe ids of teachers from before teacher.onnx existed.
        RecipeIgnore("teacher.onnx", default=None),
    )

    def __init__(self, config: TeacherStageConfig) -> None:
        super().__init__(config)
        if config.teacher.kind == "onnx-file":  # the converted model comes from the cached onnx_import stage
            self.inputs = ("data", "onnx_import")

    def task_cores(self) -> int:
        # a keras-file teacher is a file on the client's disk: it is loaded there
        return 0 if self.config.teacher.kind == "keras-file" else self.cores

    def run(self, inputs: Mapping[str, Artifact], out: Path, ctx: RunContext) -> dict[str, Any]:
        from pipeline.models.cost import count_macs, count_parameters
        from pipeline.models.teacher import build_resnet_teacher, load_keras_teacher
        from pipeline.training.ensemble import ensemble_logits
        from pipeline.training.fit import predict_logits, train_classifier

        cfg = self.config
        data = Splits(inputs["data"], cfg.preprocessing)
        classes = len(data.class_names)
        x_train = data.model_input("x_train")
        y_train = data.raw("y_train")
        metrics: dict[str, Any] = {}
        if cfg.teacher.kind == "keras-file":
            model = load_keras_teacher(Path(cfg.teacher.path), data.input_shape, classes)
            metrics["source"] = cfg.teacher.path
        elif cfg.teacher.kind == "onnx-file":
            from pipeline.stages.onnx_import_stage import load_imported_teacher

            model = load_imported_teacher(inputs["onnx_import"])
            metrics["source"] = cfg.teacher.path
        else:
            model = build_resnet_teacher(data.input_shape, classes, cfg.teacher.base_width, tuple(cfg.teacher.blocks_per_stage))
            metrics.update(
                train_classifier(
                    model, x_train, y_train, classes, cfg.teacher.training,
                    seed=cfg.seed, label="teacher", shift=cfg.teacher.shift,
                    x_val=data.model_input("x_val"), y_val=data.raw("y_val"), progress=ctx.progress,
                )
            )
        with ctx.progress.task("caching teacher logits", total=None):
            np.save(out / "logits_train.npy", predict_logits(model, x_train))
            np.save(out / "logits_train_flipped.npy", predict_logits(model, x_train[:, :, ::-1]))
            x_test = data.model_input("x_test")
            test_logits = predict_logits(model, x_test)
            test_logits_flipped = predict_logits(model, x_test[:, :, ::-1])
        if cfg.teacher.kind == "onnx-file":
            # The converted SavedModel stays in the onnx_import artifact; its weights are constants
            # Keras cannot count, so the sizes come from the ONNX graph.
            imported = inputs["onnx_import"].metrics
            metrics.update(parameters=imported["parameters"], macs=imported["macs"])
        else:
            model.save(out / MODEL_FILE)
            metrics.update(parameters=count_parameters(model), macs=count_macs(model))
        y_test = data.raw("y_test")
        # What distillation.flip_average teaches with: the mean of the image's and its mirror's softmax.
        flip_average = ensemble_logits([test_logits, test_logits_flipped], [0.5, 0.5], 1.0)
        metrics.update(
            model=model.name,
            test_accuracy=float(np.mean(test_logits.argmax(1) == y_test)),
            test_accuracy_flip_average=float(np.mean(flip_average.argmax(1) == y_test)),
        )
        return metrics

"""Stage ``prune``: compress the distilled student's weights, then fine-tune to win accuracy back.

Deep Compression order inside one cached step: prune (magnitude or structured channels), fine-tune
(on the teacher's soft targets when the profile distils), then optionally share weights by k-means
clustering and fine-tune the centroids. The output is a student artifact like the distill stage's,
so quantize, evaluate and package take it unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from pipeline.config.profile import (
    LATER_TRAINING_OPTIONS, ClusteringConfig, DistillationConfig, PreprocessingConfig, PruningConfig, Strict, TrainingConfig,
)
from pipeline.errors import ConfigError
from pipeline.stages.base import Artifact, RecipeIgnore, RunContext, Stage
from pipeline.stages.data_stage import Splits
from pipeline.stages.registry import register_stage
from pipeline.stages.student_stage import KD_RECIPE_IGNORES, MODEL_FILE, load_student, soft_targets, teacher_input_names

log = logging.getLogger(__name__)


class PruneStageConfig(Strict):
    pruning: PruningConfig
    clustering: ClusteringConfig
    preprocessing: PreprocessingConfig
    distillation: Optional[DistillationConfig]  # set when fine-tuning uses the teacher(s)
    seed: int


@register_stage
class PruneStage(Stage[PruneStageConfig]):
    name = "prune"
    description = "Prune and/or cluster the student's weights, then fine-tune it."
    version = 4  # 2: clustering keeps magnitude-pruned weights at exactly zero; 3: channels tied by Adds are pruned together; 4: fused BatchNorm
    cores = 1
    # Clustering alone fine-tunes with its own epochs and rate (only the batch size is pruning's),
    # so the rest of pruning's fine-tune does not change what it produces.
    recipe_ignores = KD_RECIPE_IGNORES + tuple(
        RecipeIgnore(f"pruning.fine_tune.{key}", when=lambda cfg: cfg.pruning.method == "none")
        for key in ("epochs", "learning_rate", "augment", *LATER_TRAINING_OPTIONS)
    )

    def __init__(self, config: PruneStageConfig) -> None:
        super().__init__(config)
        kd = config.distillation
        self.inputs = ("data", "student") + (() if kd is None else teacher_input_names(len(kd.extra_teachers)))

    def run(self, inputs: Mapping[str, Artifact], out: Path, ctx: RunContext) -> dict[str, Any]:
        from pipeline.training.fit import predict_logits

        cfg = self.config
        data = Splits(inputs["data"], cfg.preprocessing)
        model = load_student(inputs["student"])
        y_test = data.raw("y_test")
        before = _snapshot(model, data, inputs["student"].metrics.get("test_accuracy"))
        report: dict[str, Any] = {"method": cfg.pruning.method, "requested_sparsity": cfg.pruning.sparsity}
        kd = soft_targets(cfg.distillation, inputs, len(data.raw("y_train"))) if cfg.distillation is not None else {}

        if cfg.pruning.method != "none":
            model = self._prune(model, data, kd, report, ctx)
        if cfg.clustering.enabled:
            model = self._cluster(model, data, kd, report, ctx)

        test_logits = predict_logits(model, data.model_input("x_test"))
        np.save(out / "test_logits.npy", test_logits)
        model.save(out / MODEL_FILE)
        accuracy = float(np.mean(test_logits.argmax(1) == y_test))
        after = _snapshot(model, data, accuracy)
        student = dict(inputs["student"].metrics)
        report.update(before=before, after=after)
        return {
            # The keys the distill stage records, so package and reports read a pruned student the same way.
            "model": student.get("model"),
            "family": student.get("family"),
            "width_multiplier": student.get("width_multiplier"),
            "distilled": student.get("distilled"),
            "parameters": after["parameters"],
            "macs": after["macs"],
            "test_accuracy": accuracy,
            "compression": report,
        }

    def _fine_tune(self, model, data: Splits, kd: dict, training: TrainingConfig, label: str, callbacks: list, ctx: RunContext) -> dict:
        from pipeline.training.fit import train_classifier

        cfg = self.config
        return train_classifier(
            model, data.model_input("x_train"), data.raw("y_train"), len(data.class_names), training,
            seed=cfg.seed, label=label, x_val=data.model_input("x_val"), y_val=data.raw("y_val"),
            progress=ctx.progress, callbacks=callbacks, **kd,
        )

    def _prune(self, model, data: Splits, kd: dict, report: dict, ctx: RunContext):
        from pipeline.compress.magnitude import MagnitudePruningCallback
        from pipeline.compress.sparsity_report import layer_sparsity, overall_sparsity

        p = self.config.pruning
        method = p.method
        if method == "structured":
            structured = _structured(model, p)
            if structured is None:
                method = "magnitude"
                report["fallback"] = "magnitude"
            else:
                model, report["structured"] = structured
        report["applied_method"] = method
        callbacks = []
        if method == "magnitude":
            steps = _steps(len(data.raw("y_train")), p.fine_tune)
            callbacks.append(
                MagnitudePruningCallback(
                    final_sparsity=p.sparsity, begin_step=0, end_step=max(1, int(0.7 * steps)), scope=p.scope,
                    power=p.schedule_power, skip=p.skip_layers,
                )
            )
        if p.fine_tune.epochs > 0:
            history = self._fine_tune(model, data, kd, p.fine_tune, f"fine-tuning {method}-pruned student", callbacks, ctx)
            report["fine_tune"] = {k: history[k] for k in ("epochs", "train_seconds", "val_accuracy", "distilled")}
        elif callbacks:  # no fine-tuning: prune in one shot
            from pipeline.compress.magnitude import prune_to

            prune_to(model, p.sparsity, p.scope, skip=p.skip_layers)
        report["layers"] = layer_sparsity(model)
        report["sparsity"] = overall_sparsity(model)
        return model

    def _cluster(self, model, data: Splits, kd: dict, report: dict, ctx: RunContext):
        from pipeline.compress.clustering import ClusterPreservingCallback, cluster_weights

        c = self.config.clustering
        with ctx.progress.task(f"clustering weights into {c.clusters} centroids", total=None):
            result = cluster_weights(model, clusters=c.clusters, min_params=c.min_params)  # in place
        if c.fine_tune_epochs > 0:
            training = TrainingConfig(epochs=c.fine_tune_epochs, learning_rate=c.learning_rate, batch_size=self.config.pruning.fine_tune.batch_size)
            callback = ClusterPreservingCallback(result)
            self._fine_tune(model, data, kd, training, "fine-tuning cluster centroids", [callback], ctx)
        report["clustering"] = {"clusters": c.clusters, "layers": result.rows()}
        return model


def _steps(count: int, training: TrainingConfig) -> int:
    return max(1, -(-count // training.batch_size)) * training.epochs


def _structured(model, p: PruningConfig):
    """(narrower model, report), or None when nothing can be removed and fallback is allowed."""
    from pipeline.compress.structured import prune_channels

    try:
        result = prune_channels(model, p.sparsity, importance=p.importance, skip=p.skip_layers)
    except ConfigError as exc:
        if not p.fallback_unstructured:
            raise ConfigError(f"{exc} Set pruning.fallback_unstructured: true to prune by weight magnitude instead.") from None
        log.warning("structured pruning is not possible here (%s); falling back to magnitude pruning", exc)
        return None
    for item in result.skipped:
        log.info("structured pruning skipped %s", item)
    return result.model, result.as_dict()


def _snapshot(model, data: Splits, accuracy: Optional[float]) -> dict[str, Any]:
    """Parameters, MACs, sparsity and .tflite size (raw and gzip) of ``model`` right now."""
    from pipeline.compress.clustering import gzip_size
    from pipeline.compress.sparsity_report import overall_sparsity
    from pipeline.models.cost import count_macs, count_parameters
    from pipeline.quantize.convert import convert

    tflite = convert(model, "float32")
    return {
        "parameters": count_parameters(model),
        "macs": count_macs(model),
        "sparsity": overall_sparsity(model),
        "float32_tflite_bytes": len(tflite),
        "float32_tflite_gzip_bytes": gzip_size(tflite),
        "test_accuracy": accuracy,
    }

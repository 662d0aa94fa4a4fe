"""Stage ``evaluate``: run the converted model with ai-edge-litert on the whole test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipeline.config.profile import PreprocessingConfig, Strict
from pipeline.stages.base import Artifact, RunContext, Stage
from pipeline.stages.data_stage import Splits
from pipeline.stages.quantize_stage import MODEL_FILE
from pipeline.stages.registry import register_stage

PREDICTIONS = "test_predictions.npy"


class EvaluateStageConfig(Strict):
    preprocessing: PreprocessingConfig


@register_stage
class EvaluateStage(Stage[EvaluateStageConfig]):
    name = "evaluate"
    description = "Run the .tflite with ai-edge-litert on the whole test split."
    version = 1
    inputs = ("data", "student", "tflite")

    def run(self, inputs: Mapping[str, Artifact], out: Path, ctx: RunContext) -> dict[str, Any]:
        from pipeline.quantize.litert_eval import predict

        cfg = self.config
        data = Splits(inputs["data"], cfg.preprocessing)
        labels = data.raw("y_test")
        model_bytes = (inputs["tflite"].path / MODEL_FILE).read_bytes()
        mode = inputs["tflite"].metrics.get("mode", "?")
        logits = predict(model_bytes, data.model_input("x_test"), progress=ctx.progress, label=f"evaluating {mode} .tflite")
        predictions = logits.argmax(1)
        keras_predictions = np.load(inputs["student"].path / "test_logits.npy").argmax(1)
        np.save(out / PREDICTIONS, predictions.astype(np.int64))
        return {
            "mode": mode,
            "accuracy": float(np.mean(predictions == labels)),
            "agreement_with_keras": float(np.mean(predictions == keras_predictions)),
            "keras_accuracy": float(np.mean(keras_predictions == labels)),
            "tflite_bytes": len(model_bytes),
            "count": int(len(labels)),
        }

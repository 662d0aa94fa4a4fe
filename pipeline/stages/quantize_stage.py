"""Stage ``quantize``: convert the student to .tflite in one post-training quantization mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

from pipeline.config.profile import MixedPrecisionConfig, PreprocessingConfig, QuantMode, Strict
from pipeline.stages.base import Artifact, RecipeIgnore, RunContext, Stage
from pipeline.stages.data_stage import Splits
from pipeline.stages.registry import register_stage
from pipeline.stages.student_stage import load_student

MODEL_FILE = "model.tflite"


class QuantizeStageConfig(Strict):
    mode: QuantMode
    calibration_samples: int
    int8_io: bool
    preprocessing: PreprocessingConfig
    mixed: Optional[MixedPrecisionConfig] = None  # mode "mixed" only


@register_stage
class QuantizeStage(Stage[QuantizeStageConfig]):
    name = "quantize"
    description = "Convert the student to .tflite in one post-training quantization mode."
    version = 1
    inputs = ("data", "student")
    # Calibration settings only matter for int8; leaving them out elsewhere lets e.g. the float16
    # model stay cached when only the calibration count changes.
    recipe_ignores = (
        RecipeIgnore("calibration_samples", when=lambda cfg: cfg.mode not in ("int8", "mixed")),
        RecipeIgnore("int8_io", when=lambda cfg: cfg.mode != "int8"),
        RecipeIgnore("mixed", when=lambda cfg: cfg.mode != "mixed"),
    )

    def run(self, inputs: Mapping[str, Artifact], out: Path, ctx: RunContext) -> dict[str, Any]:
        from pipeline.bundle.writer import tensor_specs
        from pipeline.quantize.convert import convert
        from pipeline.quantize.litert_eval import load_interpreter

        cfg = self.config
        model = load_student(inputs["student"])
        calibration = None
        data = Splits(inputs["data"], cfg.preprocessing)
        if cfg.mode in ("int8", "mixed"):
            calibration = data.model_input("x_calib")[: cfg.calibration_samples]
        extra: dict[str, Any] = {}
        if cfg.mode == "mixed":
            model_bytes, extra = _mixed(model, calibration, data, cfg.mixed or MixedPrecisionConfig(), ctx)
        else:
            model_bytes = convert(model, cfg.mode, calibration, cfg.int8_io, progress=ctx.progress)
        (out / MODEL_FILE).write_bytes(model_bytes)
        interpreter = load_interpreter(model_bytes)
        specs = {"inputs": tensor_specs(interpreter.get_input_details()), "outputs": tensor_specs(interpreter.get_output_details())}
        (out / "tensors.json").write_text(json.dumps(specs, indent=2), encoding="utf-8")
        calibrated = len(calibration) if calibration is not None else 0
        return {"mode": cfg.mode, "tflite_bytes": len(model_bytes), "calibration_samples": calibrated, **extra}


def _mixed(model, calibration, data: Splits, mixed: MixedPrecisionConfig, ctx: RunContext) -> tuple[bytes, dict[str, Any]]:
    """Full int8 unless it costs more than the budget on the VALIDATION split; then keep layers float.

    Choosing layers on the validation split keeps the test split an honest measurement.
    """
    from pipeline.quantize.mixed import convert_mixed

    result = convert_mixed(
        model, calibration, data.model_input("x_val"), data.raw("y_val"),
        max_accuracy_drop=mixed.max_accuracy_drop, max_float_layers=mixed.max_float_layers, progress=ctx.progress,
    )
    return result.model_bytes, {"mixed": result.as_dict()}

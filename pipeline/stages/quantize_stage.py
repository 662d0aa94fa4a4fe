"""Stage ``quantize``: convert the student to .tflite in one post-training quantization mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from pipeline.config.profile import PreprocessingConfig, QuantMode, Strict
from pipeline.stages.base import Artifact, RunContext, Stage
from pipeline.stages.data_stage import Splits
from pipeline.stages.student_stage import load_student

MODEL_FILE = "model.tflite"


class QuantizeStageConfig(Strict):
    mode: QuantMode
    calibration_samples: int
    int8_io: bool
    preprocessing: PreprocessingConfig


class QuantizeStage(Stage):
    name = "quantize"
    version = 1
    inputs = ("data", "student")

    def config_json(self) -> Any:
        # Calibration settings only matter for int8; leaving them out elsewhere lets e.g. the
        # float16 model stay cached when only the calibration count changes.
        cfg = super().config_json()
        if cfg["mode"] != "int8":
            cfg.pop("calibration_samples")
            cfg.pop("int8_io")
        return cfg

    def run(self, inputs: Mapping[str, Artifact], out: Path, ctx: RunContext) -> dict[str, Any]:
        from pipeline.bundle.writer import tensor_specs
        from pipeline.quantize.convert import convert
        from pipeline.quantize.litert_eval import load_interpreter

        cfg: QuantizeStageConfig = self.config  # type: ignore[assignment]
        model = load_student(inputs["student"])
        calibration = None
        if cfg.mode == "int8":
            calibration = Splits(inputs["data"], cfg.preprocessing).model_input("x_calib")[: cfg.calibration_samples]
        model_bytes = convert(model, cfg.mode, calibration, cfg.int8_io, progress=ctx.progress)
        (out / MODEL_FILE).write_bytes(model_bytes)
        interpreter = load_interpreter(model_bytes)
        specs = {"inputs": tensor_specs(interpreter.get_input_details()), "outputs": tensor_specs(interpreter.get_output_details())}
        (out / "tensors.json").write_text(json.dumps(specs, indent=2), encoding="utf-8")
        return {"mode": cfg.mode, "tflite_bytes": len(model_bytes), "calibration_samples": len(calibration) if calibration is not None else 0}

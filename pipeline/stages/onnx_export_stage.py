"""Stage ``export_onnx``: the student as ONNX (tf2onnx), checked against Keras with onnxruntime.

Runs when the profile says ``export: {onnx: true}``; the package stage then ships ``model.onnx``
beside ``model.tflite`` and describes it in the manifest's ``extra_models``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pipeline.config.profile import ExportConfig, PreprocessingConfig, Strict
from pipeline.stages.base import Artifact, RecipeIgnore, RunContext, Stage
from pipeline.stages.data_stage import Splits
from pipeline.stages.registry import register_stage

ONNX_FILE = "model.onnx"


class OnnxExportStageConfig(Strict):
    export: ExportConfig
    preprocessing: PreprocessingConfig


@register_stage
class OnnxExportStage(Stage[OnnxExportStageConfig]):
    name = "export_onnx"
    description = "Export the student to ONNX (tf2onnx), checked against Keras with onnxruntime."
    version = 1
    inputs = ("data", "student")
    # Always true here; the switch only decides whether the stage runs.
    recipe_ignores = (RecipeIgnore("export.onnx"),)

    def run(self, inputs: Mapping[str, Artifact], out: Path, ctx: RunContext) -> dict[str, Any]:
        from importlib import metadata

        from pipeline.onnx.check import Tolerance
        from pipeline.onnx.exporter import export_and_check
        from pipeline.stages.student_stage import load_student

        cfg = self.config
        data = Splits(inputs["data"], cfg.preprocessing)
        model = load_student(inputs["student"])
        images = data.model_input("x_test")[: cfg.export.check_samples]
        labels = data.raw("y_test")[: len(images)]
        with ctx.progress.task(f"exporting ONNX (opset {cfg.export.opset})", total=None):
            report = export_and_check(
                model, images, out / ONNX_FILE, opset=cfg.export.opset,
                tolerance=Tolerance(cfg.export.max_abs_error, cfg.export.min_top1_agreement), labels=labels,
            )
        return {
            "file": ONNX_FILE,
            "format": "onnx",
            "opset": cfg.export.opset,
            "bytes": (out / ONNX_FILE).stat().st_size,
            "layout": "NHWC",
            "exporter": f"tf2onnx {metadata.version('tf2onnx')}",
            "check": {**report.as_dict(), "reference": "keras", "runtime": f"onnxruntime {metadata.version('onnxruntime')}"},
        }


def bundle_extras(inputs: Mapping[str, Artifact]) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    """Extra files and manifest ``extra_models`` entries for the package stage (empty without export)."""
    artifact = inputs.get("export_onnx")
    if artifact is None:
        return {}, []
    entry = dict(artifact.metrics)
    return {ONNX_FILE: (artifact.path / ONNX_FILE).read_bytes()}, [entry]

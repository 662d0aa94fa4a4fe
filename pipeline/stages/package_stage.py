"""Stage ``package``: assemble the bundle the device side trusts (docs/ARCHITECTURE.md contract)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipeline.config.profile import PreprocessingConfig, Strict
from pipeline.provenance import tool_versions
from pipeline.stages.base import Artifact, RunContext, Stage
from pipeline.stages.data_stage import Splits
from pipeline.stages.evaluate_stage import PREDICTIONS
from pipeline.stages.quantize_stage import MODEL_FILE
from pipeline.stages.registry import register_stage

BUNDLES = "bundles"


class PackageStageConfig(Strict):
    profile_name: str
    profile_sha256: str
    eval_count: int
    preprocessing: PreprocessingConfig


@register_stage
class PackageStage(Stage[PackageStageConfig]):
    name = "package"
    description = "Assemble the bundle the device side trusts (manifest, model, eval set)."
    # 2: bundle schema 2 (the id covers the manifest); a cached schema-1 bundle must not be reused.
    version = 2

    def __init__(self, config: PackageStageConfig, optional_inputs: tuple[str, ...] = ()) -> None:
        super().__init__(config)
        self.inputs = ("data", "student", "tflite", "evaluate", *optional_inputs)

    def run(self, inputs: Mapping[str, Artifact], out: Path, ctx: RunContext) -> dict[str, Any]:
        from pipeline.bundle.writer import write_bundle
        from pipeline.data.preprocessing import PreprocessingSpec
        from pipeline.stages.onnx_export_stage import bundle_extras

        cfg = self.config
        data = Splits(inputs["data"], cfg.preprocessing)
        count = min(cfg.eval_count, len(data.raw("y_test")))
        evaluation = inputs["evaluate"].metrics
        student = inputs["student"].metrics
        tensors = json.loads((inputs["tflite"].path / "tensors.json").read_text(encoding="utf-8"))
        host_predictions = np.load(inputs["evaluate"].path / PREDICTIONS)[:count]
        eval_labels = data.raw("y_test")[:count]
        host_metrics = {
            "accuracy": evaluation["accuracy"],
            "eval_subset_accuracy": float(np.mean(host_predictions == eval_labels)),
            "agreement_with_keras": evaluation["agreement_with_keras"],
            "keras_accuracy": evaluation["keras_accuracy"],
            "test_count": evaluation["count"],
            "tflite_bytes": evaluation["tflite_bytes"],
            "parameters": student["parameters"],
            "macs": student["macs"],
        }
        if "teacher" in inputs:
            host_metrics["teacher_accuracy"] = inputs["teacher"].metrics.get("test_accuracy")
        if "scratch" in inputs:
            host_metrics["scratch_student_accuracy"] = inputs["scratch"].metrics.get("test_accuracy")
        provenance = {
            "profile_sha256": cfg.profile_sha256,
            "dataset_sha256": inputs["data"].metrics.get("source_sha256"),
            "teacher_id": inputs["teacher"].recipe_id if "teacher" in inputs else None,
            "student_id": inputs["student"].recipe_id,
            "student_architecture": student.get("model"),
            "distilled": student.get("distilled"),
            "tool_versions": tool_versions(),
        }
        if "compression" in student:
            provenance["compression"] = compression_summary(student["compression"])
            host_metrics["sparsity"] = student["compression"].get("after", {}).get("sparsity")
        extra_files, extra_models = bundle_extras(inputs)
        bundle = write_bundle(
            bundles_root=out / BUNDLES,
            profile_name=cfg.profile_name,
            model_bytes=(inputs["tflite"].path / MODEL_FILE).read_bytes(),
            quantization=inputs["tflite"].metrics["mode"],
            inputs=tensors["inputs"],
            outputs=tensors["outputs"],
            preprocessing=PreprocessingSpec.from_config(cfg.preprocessing).to_dict(),
            labels=data.class_names,
            eval_images=data.raw("x_test")[:count],
            eval_labels=eval_labels,
            host_predictions=host_predictions,
            host_metrics=host_metrics,
            provenance=provenance,
            extra_files=extra_files or None,
            extra_models=extra_models or None,
        )
        return {"bundle_id": bundle.name, "host_metrics": host_metrics}


def compression_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The headline of a prune-stage report, small enough for a manifest."""
    clustering = report.get("clustering") or {}
    return {
        "pruning": report.get("applied_method", report.get("method")),
        "requested_sparsity": report.get("requested_sparsity"),
        "sparsity": (report.get("after") or {}).get("sparsity"),
        "clusters": clustering.get("clusters"),
    }


def publish_bundle(artifact: Artifact, bundles_root: Path) -> Path:
    """Copy the cached bundle to ``results/bundles/<id>`` (atomically) and make its tarball."""
    from pipeline.bundle.manifest import make_tarball, verify_bundle
    from pipeline.fsutil import atomic_directory

    bundle_id = artifact.metrics["bundle_id"]
    target = bundles_root / bundle_id
    if not target.is_dir():
        with atomic_directory(target) as tmp:
            shutil.copytree(artifact.path / BUNDLES / bundle_id, tmp, dirs_exist_ok=True)
    verify_bundle(target)
    make_tarball(target)
    return target

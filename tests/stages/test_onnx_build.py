"""The ONNX package stays below the build: real images for a conversion come from pipeline.onnx_build."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import yaml

import pipeline.onnx as onnx_package
from pipeline.onnx_build import profile_images


def test_the_onnx_package_does_not_import_the_build_or_its_stages() -> None:
    for path in Path(onnx_package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad = [n for n in names if n == "pipeline.build" or n.startswith(("pipeline.stages", "pipeline.cli", "click"))]
            assert not bad, f"{path.name} imports {bad}"


@pytest.mark.slow
def test_profile_images_are_the_profiles_validation_and_calibration_images(tmp_path: Path) -> None:
    profile = {
        "name": "images", "seed": 5,
        "dataset": {"max_train": 200, "max_test": 100, "calibration_count": 20, "eval_count": 10},
        "preprocessing": {"height": 28, "width": 28, "channels": 1},
        "quantization": {"calibration_samples": 10},
    }
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump(profile))
    sample, size = profile_images(str(path), samples=7)
    assert size.as_tuple() == (28, 28, 1)
    assert sample.real and sample.images.shape == (7, 28, 28, 1) and sample.images.dtype == np.float32
    assert sample.labels is not None and sample.labels.shape == (7,)
    assert sample.calibration is not None and len(sample.calibration) == 20

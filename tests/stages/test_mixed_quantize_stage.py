"""Mode ``mixed`` through the real pipeline: chosen on the validation split, shipped, run by the agent."""

from __future__ import annotations

import json

import pytest

from pipeline.build import build_profile
from pipeline.bundle.manifest import verify_bundle
from pipeline.config.loader import validate
from pipeline.config.profile import BuildProfile
from pipeline.config.target import load_target
from pipeline.deploy.deployer import deploy
from pipeline.deploy.profiling import profile as run_profile
from tests.helpers.profiles import merged

pytestmark = pytest.mark.slow

BASE = {
    "name": "tiny-mixed",
    "seed": 13,
    # Enough steps for BatchNorm's moving statistics to settle, so the model is far above chance and
    # int8 with 4 calibration images has something to lose.
    "dataset": {"max_train": 2000, "max_test": 400, "calibration_count": 40, "eval_count": 40},
    "distillation": {"enabled": False},
    "student": {"family": "mobilenet_v1", "width_multiplier": 0.25, "training": {"epochs": 2, "batch_size": 32}},
    "quantization": {"modes": ["float32", "int8", "mixed"], "ship": "mixed", "calibration_samples": 4},
}


def build(drop: float, max_layers=None):
    mixed = {"max_accuracy_drop": drop, "max_float_layers": max_layers}
    return build_profile(validate(BuildProfile, merged(BASE, quantization={"mixed": mixed}), "test profile"))


def test_generous_budget_ships_plain_int8_and_tight_budget_keeps_layers_float(tmp_path) -> None:
    easy = build(0.9)
    mixed = easy.artifacts["quantize:mixed"].metrics["mixed"]
    assert mixed["kept_in_float"] == [] and mixed["met_budget"] is True
    # Same bytes as the int8 stage would produce with float I/O: no float op was kept.
    assert easy.artifacts["quantize:mixed"].metrics["tflite_bytes"] <= easy.artifacts["quantize:float32"].metrics["tflite_bytes"]

    hard = build(0.0, max_layers=2)  # 4 calibration images make int8 lossy; allow at most 2 float ops
    report = hard.artifacts["quantize:mixed"].metrics["mixed"]
    assert set(report) >= {"kept_in_float", "accuracy", "size_bytes", "latency_ms", "met_budget"}
    print(json.dumps({k: report[k] for k in ("kept_in_float", "accuracy", "met_budget")}))
    manifest = verify_bundle(hard.bundle_dir)
    assert manifest["model"]["quantization"] == "mixed"
    if report["accuracy"]["int8"] < report["accuracy"]["float32"]:
        assert 1 <= len(report["kept_in_float"]) <= 2
        assert manifest["model"]["inputs"][0]["dtype"] == "float32"  # float I/O around float ops

    target = tmp_path / "local.yaml"
    target.write_text(json.dumps({
        "arch": "x86_64", "threads": 1, "remote_dir": str(tmp_path / "device"), "python": "host",
        "profiling": {"runs": 5, "min_seconds": 0.0, "warmup": 1}, "transport": {"type": "local"},
    }))
    cfg = load_target(str(target))
    deploy(cfg, hard.bundle_dir)
    record = run_profile(cfg).record
    assert record.bundle_id == hard.bundle_dir.name
    assert record.latency.p50 > 0 and record.accuracy.agreement_with_host >= 0.95

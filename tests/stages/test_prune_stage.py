"""The prune stage in a real build: structured, magnitude, fallback, clustering, cache."""

from __future__ import annotations


import numpy as np
import pytest
import yaml

from pipeline.build import build_profile
from pipeline.bundle.manifest import verify_bundle
from pipeline.config.loader import validate
from pipeline.config.profile import BuildProfile
from pipeline.errors import ConfigError
from tests.helpers.profiles import merged

pytestmark = pytest.mark.slow

BASE = {
    "name": "tiny-prune",
    "seed": 11,
    "dataset": {"max_train": 600, "max_test": 300, "calibration_count": 50, "eval_count": 50},
    "teacher": {"base_width": 8, "blocks_per_stage": [1, 1], "training": {"epochs": 1, "batch_size": 64}},
    "student": {"family": "mobilenet_v1", "width_multiplier": 0.5, "training": {"epochs": 1, "batch_size": 64}},
    "distillation": {"scratch_baseline": False},
    "pruning": {"method": "structured", "sparsity": 0.5, "fine_tune": {"epochs": 1, "batch_size": 64}},
    "quantization": {"modes": ["float32", "int8"], "ship": "int8", "calibration_samples": 30},
}


def profile(**sections) -> BuildProfile:
    return validate(BuildProfile, merged(BASE, **sections), "test profile")


def test_structured_pruning_shrinks_the_shipped_model_and_is_cached() -> None:
    result = build_profile(profile())
    art = result.artifacts
    report = art["prune"].metrics["compression"]
    assert report["applied_method"] == "structured"
    assert report["after"]["parameters"] < 0.7 * report["before"]["parameters"]
    assert report["after"]["macs"] < 0.7 * report["before"]["macs"]
    assert report["after"]["float32_tflite_bytes"] < report["before"]["float32_tflite_bytes"]
    assert report["fine_tune"]["distilled"] is True  # fine-tuned on the teacher's soft targets
    # Downstream stages use the pruned student: the int8 model is built from it.
    assert art["quantize:int8"].meta["inputs"]["student"] == art["prune"].recipe_id
    manifest = verify_bundle(result.bundle_dir)
    assert manifest["provenance"]["compression"]["pruning"] == "structured"
    assert manifest["host_metrics"]["parameters"] == report["after"]["parameters"]
    again = build_profile(profile())
    assert all(a.cached for a in again.artifacts.values())


def test_magnitude_pruning_reaches_the_sparsity_and_compresses_better() -> None:
    result = build_profile(profile(pruning={"method": "magnitude", "sparsity": 0.6, "scope": "global"}))
    report = result.artifacts["prune"].metrics["compression"]
    assert report["applied_method"] == "magnitude"
    # The classifier is left dense, so overall sparsity sits a little under the target.
    assert 0.5 < report["after"]["sparsity"] <= 0.6 + 1e-6
    assert report["after"]["float32_tflite_gzip_bytes"] < 0.8 * report["before"]["float32_tflite_gzip_bytes"]
    assert {row["layer"] for row in report["layers"]}


def test_clustering_limits_distinct_weights_per_layer() -> None:
    result = build_profile(profile(pruning={"method": "none"}, clustering={"enabled": True, "clusters": 8, "fine_tune_epochs": 1}))
    report = result.artifacts["prune"].metrics["compression"]
    rows = report["clustering"]["layers"]
    assert rows and all(row["unique_after"] <= 8 for row in rows)
    import keras

    model = keras.models.load_model(result.artifacts["prune"].path / "student.keras", compile=False)
    clustered = {row["layer"] for row in rows}
    for layer in model.layers:
        if layer.name in clustered:
            assert np.unique(keras.ops.convert_to_numpy(layer.kernel)).size <= 8, layer.name


def test_structured_falls_back_to_magnitude_or_fails_naming_the_layers(tmp_path) -> None:
    # With the stem and pointwise convs skipped, no channel group is left (depthwise convs only pass
    # channels through), but the depthwise kernels can still be pruned by magnitude.
    skip = ["stem_conv", "block*_pw_conv"]
    float_only = {"modes": ["float32"], "ship": "float32"}
    fallback = build_profile(profile(pruning={"skip_layers": skip}, quantization=float_only))
    report = fallback.artifacts["prune"].metrics["compression"]
    assert report["fallback"] == "magnitude" and report["applied_method"] == "magnitude"
    pruned = {row["layer"] for row in report["layers"] if row["zeros"] > 0}
    assert pruned and all(name.endswith("_dw") for name in pruned), pruned
    with pytest.raises(ConfigError, match=r"block1_pw_conv.*fallback_unstructured"):
        build_profile(profile(pruning={"skip_layers": skip, "fallback_unstructured": False}, quantization=float_only))


def test_multi_teacher_distillation_trains_two_teachers_once_each() -> None:
    extra = {"weight": 0.5, "teacher": {"base_width": 8, "blocks_per_stage": [1], "training": {"epochs": 1, "batch_size": 64}}}
    result = build_profile(profile(pruning={"method": "none"}, distillation={"extra_teachers": [extra]}, quantization={"modes": ["float32"], "ship": "float32"}))
    art = result.artifacts
    assert {"teacher", "teacher_1"} <= set(art)
    assert art["teacher"].recipe_id != art["teacher_1"].recipe_id
    assert set(art["student"].meta["inputs"]) == {"data", "teacher", "teacher_1"}
    assert art["student"].metrics["distilled"] is True


@pytest.mark.parametrize("bad, message", [
    ({"pruning": {"sparsity": 1.0}}, "key 'pruning.sparsity'"),
    ({"pruning": {"sparsity": -0.2}}, "key 'pruning.sparsity'"),
    ({"pruning": {"metod": "structured"}}, "unknown key 'pruning.metod'"),
    ({"clustering": {"clusters": 1}}, "key 'clustering.clusters'"),
    ({"quantization": {"modes": ["int4"]}}, "quantization.modes"),
])
def test_bad_compression_settings_name_the_key(bad, message, tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(merged(BASE, **bad)))
    from pipeline.config.profile import load_profile

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as err:
        load_profile(str(path))
    assert "bad.yaml" in str(err.value)


def test_prune_then_cluster_keeps_the_sparsity() -> None:
    """The Deep Compression chain in one profile: distill → magnitude prune → cluster → quantize."""
    result = build_profile(profile(
        pruning={"method": "magnitude", "sparsity": 0.5},
        clustering={"enabled": True, "clusters": 8, "fine_tune_epochs": 1},
        quantization={"modes": ["float32"], "ship": "float32"},
    ))
    report = result.artifacts["prune"].metrics["compression"]
    assert report["applied_method"] == "magnitude" and report["clustering"]["clusters"] == 8
    assert report["after"]["sparsity"] > 0.4  # clustering and its fine-tune did not refill pruned weights
    assert all(row["unique_after"] <= 8 for row in report["clustering"]["layers"])
    assert report["after"]["float32_tflite_gzip_bytes"] < 0.6 * report["before"]["float32_tflite_gzip_bytes"]

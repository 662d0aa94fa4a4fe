"""The compression bench's latency model, on real TFLite models: a wide and a narrow twin with the
same ops, in int8 and float32, laid out as sweep rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.bench.compression_bench import interleaved_p50s, latency_model
from pipeline.quantize.litert_eval import op_count
from tests.helpers.bundles import make_tiny_bundle

# conv channels -> MACs of the tiny model (12x12 input, 3x3 conv from 1 channel, 3x3 depthwise)
WIDTHS = {64: 12 * 12 * 9 * 64 * 2, 4: 12 * 12 * 9 * 4 * 2}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("results")
    rows = []
    for mode in ("int8", "float32"):
        for width, macs in WIDTHS.items():
            bundle = make_tiny_bundle(root / "bundles", quantization=mode, width=width)
            sparsity = 0.0 if width == 64 else 0.5
            rows.append({"name": f"tiny-{mode}-w{width}", "bundle_id": bundle.name, "macs": macs, "family": "tiny", "sparsity": sparsity, "quantization": mode})
    rows.append({"name": "broken", "error": "build failed"})  # a failed variant is left out, not fitted
    return root, rows


def test_interleaved_p50s_measures_every_model_at_its_own_input_size(sweep, monkeypatch: pytest.MonkeyPatch) -> None:
    root, rows = sweep
    monkeypatch.setenv("EDGESHIP_RESULTS", str(root))
    models = {r["name"]: (root / "bundles" / r["bundle_id"] / "model.tflite").read_bytes() for r in rows if "bundle_id" in r}
    p50 = interleaved_p50s(models, threads=1, rounds=2, runs=20)
    assert set(p50) == set(models) and all(0 < v < 50 for v in p50.values())


def test_latency_model_fits_each_mode_and_judges_pruning(sweep, monkeypatch: pytest.MonkeyPatch) -> None:
    root, rows = sweep
    monkeypatch.setenv("EDGESHIP_RESULTS", str(root))
    report = latency_model(rows, [{"family": "tiny", "latency_reduction": 0.25}], rounds=2, runs=50)
    assert set(report["fits"]) == {"float32", "int8"}
    int8 = report["fits"]["int8"]
    names = [v["name"] for v in int8["variants"]]
    assert names == ["tiny-int8-w64", "tiny-int8-w4"]
    assert all(v["ops"] == op_count((root / "bundles" / rows[0]["bundle_id"] / "model.tflite").read_bytes()) for v in int8["variants"])
    assert int8["per_op_us"] >= 0 and int8["per_mmac_us"] >= 0
    (family,) = report["pruning"]
    assert family["family"] == "tiny" and family["measured_reduction"] == 0.25
    # removing MACs can never be predicted to do more than removing all of them
    assert 0 <= family["predicted_reduction"] <= family["ceiling_all_macs_removed"] < 1


def test_op_count_counts_the_interpreters_operators(sweep) -> None:
    root, rows = sweep
    model = (root / "bundles" / rows[0]["bundle_id"] / "model.tflite").read_bytes()
    # conv, depthwise, mean (global pooling), fully connected; int8 I/O adds no quantize ops
    assert op_count(model) == 4

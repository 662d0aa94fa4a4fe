"""The compression table printed after a build with a prune stage."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from pipeline.build import BuildResult
from pipeline.config.profile import load_profile
from pipeline.reports.build_table import pruning_table
from pipeline.stages.base import Artifact


def render(table) -> str:
    console = Console(record=True, width=120)
    console.print(table)
    return console.export_text()


def test_no_prune_stage_means_no_table() -> None:
    assert pruning_table(BuildResult(profile=load_profile("quick"))) is None


def test_table_shows_before_after_and_each_pruned_layer() -> None:
    report = {
        "method": "structured", "applied_method": "structured",
        "before": {"test_accuracy": 0.91, "parameters": 57034, "macs": 5_050_000, "sparsity": 0.0,
                   "float32_tflite_bytes": 227_000, "float32_tflite_gzip_bytes": 200_000},
        "after": {"test_accuracy": 0.905, "parameters": 29226, "macs": 2_740_000, "sparsity": 0.0,
                  "float32_tflite_bytes": 120_000, "float32_tflite_gzip_bytes": 105_000},
        "layers": [{"layer": "block1_dw", "parameters": 144, "zeros": 0, "sparsity": 0.0}],
        "structured": {"groups": [
            {"layer": "block2_expand_conv", "channels": 64, "kept": 32},
            {"layer": "block2_project", "channels": 24, "kept": 16, "tied": ["block3_project"]},
        ]},
    }
    result = BuildResult(profile=load_profile("quick"))
    result.artifacts["prune"] = Artifact("prune", "r" * 64, Path("."), {"metrics": {"compression": report}})
    text = render(pruning_table(result))
    assert "compression: structured" in text
    assert "57,034" in text and "29,226" in text and "0.9100" in text and "0.9050" in text
    assert "block2_expand_conv" in text and "64 ch" in text and "32 ch" in text
    assert "block2_project (with block3_project)" in text  # an Add ties them: same channels kept
    assert "block1_dw" not in text  # layers with no zeros are not listed

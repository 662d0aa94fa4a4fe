"""The trainer bench's ablation: the BatchNorm-free twin is the same graph minus BatchNorm."""

from __future__ import annotations

import keras
import numpy as np

from pipeline.bench import trainer_bench


def test_the_ablation_removes_every_batchnorm_and_nothing_else() -> None:
    model = trainer_bench._build("mobilenet_v1")
    bare = trainer_bench._without_batchnorm(model)
    kinds = [type(layer).__name__ for layer in model.layers]
    bare_kinds = [type(layer).__name__ for layer in bare.layers]
    assert "BatchNormalization" in kinds and "BatchNormalization" not in bare_kinds
    assert [k for k in kinds if k != "BatchNormalization"] == [k for k in bare_kinds if k != "PassThrough"]
    assert bare.output_shape == model.output_shape


def test_a_cell_times_real_training_steps() -> None:
    cell = trainer_bench.measure_cell("squeezenet", "fused", steps=2)
    assert cell["model"] == "squeezenet" and cell["mode"] == "fused" and cell["median_ms"] > 0

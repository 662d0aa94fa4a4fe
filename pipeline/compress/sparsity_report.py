"""How many kernel weights are exactly zero, per layer and overall.

Measured on every Conv/DepthwiseConv/Dense kernel, the classifier included, so the report shows
what the model really holds rather than what the pruner was asked to do (the pruner leaves the
classifier alone by default, so overall sparsity sits a little below the target).
"""

from __future__ import annotations

import keras
import numpy as np

from pipeline.compress.magnitude import prunable_weights


def layer_sparsity(model: keras.Model) -> list[dict]:
    """One row per kernel: ``{"layer", "parameters", "zeros", "sparsity"}``, in graph order."""
    rows = []
    for name, kernel in prunable_weights(model, include_classifier=True).items():
        values = keras.ops.convert_to_numpy(kernel)
        zeros = int(np.count_nonzero(values == 0))
        share = zeros / values.size if values.size else 0.0
        rows.append({"layer": name, "parameters": int(values.size), "zeros": zeros, "sparsity": share})
    return rows


def overall_sparsity(model: keras.Model) -> float:
    """Share of zeros over all kernel weights together (0.0 for a model without kernels)."""
    rows = layer_sparsity(model)
    total = sum(row["parameters"] for row in rows)
    return sum(row["zeros"] for row in rows) / total if total else 0.0

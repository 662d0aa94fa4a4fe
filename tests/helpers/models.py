"""Model helpers shared by tests."""

from __future__ import annotations

import keras
import numpy as np


def randomise_batchnorm(model: keras.Model, seed: int = 0) -> None:
    """Give BN layers trained-looking statistics.

    Fresh BN folds into all-zero biases, which the converter deduplicates (an untrained model looks
    smaller than a trained one), and a slicing mistake in any BN weight would go unnoticed.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                rng.normal(0, 0.2, beta.shape).astype("float32"),
                rng.normal(0, 0.2, mean.shape).astype("float32"),
                rng.uniform(0.5, 2.0, var.shape).astype("float32"),
            ])

"""SqueezeNet-style student: fire modules (1x1 squeeze, then 1x1 and 3x3 expands concatenated).

Adapted to 28x28: a stride-1 3x3 stem (stride 2 for inputs >= 56 px), max-pooling only twice
(28 -> 14 -> 7), and SqueezeNet's classifier (dropout, 1x1 conv to ``num_classes``, global average
pooling) whose output is the LOGITS. BatchNormalization follows every conv: the original has none,
but small nets on small data train far more reliably with it and it folds away in TFLite.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence, Union

import keras
from keras import layers

from pipeline.models.common import BN, check_input, model_name, scaled, stem_stride


class Fire(NamedTuple):
    squeeze: int
    expand1x1: int
    expand3x3: int


POOL = "pool"  # a 3x3 stride-2 max-pool in the table below

SQUEEZENET_STEM = 32
SQUEEZENET_LAYERS: tuple[Union[Fire, str], ...] = (
    Fire(16, 32, 32),  # 28x28 -> 64 ch
    POOL,  # 14x14
    Fire(16, 48, 48),  # 96 ch
    Fire(24, 48, 48),
    POOL,  # 7x7
    Fire(32, 64, 64),  # 128 ch
    Fire(32, 64, 64),
)


def _conv_bn_relu(x, filters: int, kernel: int, stride: int, name: str):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(**BN, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _fire(x, fire: Fire, width_multiplier: float, name: str):
    s = _conv_bn_relu(x, scaled(fire.squeeze, width_multiplier), 1, 1, f"{name}_squeeze")
    e1 = _conv_bn_relu(s, scaled(fire.expand1x1, width_multiplier), 1, 1, f"{name}_e1")
    e3 = _conv_bn_relu(s, scaled(fire.expand3x3, width_multiplier), 3, 1, f"{name}_e3")
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([e1, e3])


def build_squeezenet(
    input_shape: Sequence[int],
    num_classes: int,
    width_multiplier: float = 1.0,
    dropout: float = 0.2,
    table: Sequence[Union[Fire, str]] = SQUEEZENET_LAYERS,
    stem_channels: int = SQUEEZENET_STEM,
) -> keras.Model:
    """Stem conv, fire modules with max-pools between, then conv-1x1-to-classes + GAP (logits)."""
    shape = check_input(input_shape, num_classes)
    inputs = keras.Input(shape, name="image")
    x = _conv_bn_relu(inputs, scaled(stem_channels, width_multiplier), 3, stem_stride(shape), "stem")
    fires = pools = 0
    for entry in table:
        if entry == POOL:
            pools += 1
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{pools}")(x)
        else:
            fires += 1
            x = _fire(x, entry, width_multiplier, f"fire{fires}")
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Conv2D(num_classes, 1, name="classifier")(x)
    outputs = layers.GlobalAveragePooling2D(name="logits")(x)
    return keras.Model(inputs, outputs, name=model_name("squeezenet", width_multiplier))

"""Parameter and MAC counting against values worked out by hand."""

from __future__ import annotations

import keras
import pytest

from pipeline.models.cost import count_macs, count_parameters


def small_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8 * 3*3*3 * 4 = 6912 MACs; 3*3*3*4 + 4 = 112 params
    x = keras.layers.BatchNormalization()(x)  # 4*4 = 16 params, 0 MACs
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)  # 4*4 * 9 * 4 = 576; 36 params
    x = keras.layers.SeparableConv2D(6, 3, padding="same")(x)  # 4*4*(9*4 + 4*6) = 960; 36 + 24 + 6 = 66 params
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5)(x)  # 6*5 = 30 MACs; 35 params
    return keras.Model(inputs, outputs)


def test_hand_computed_small_model() -> None:
    model = small_model()
    assert count_macs(model) == 6912 + 576 + 960 + 30
    assert count_parameters(model) == 112 + 16 + 36 + 66 + 35
    assert count_parameters(model) == model.count_params()
    assert count_parameters(model, trainable_only=True) == 112 + 8 + 36 + 66 + 35


def test_valid_padding_strides_and_groups() -> None:
    inputs = keras.Input((10, 10, 4))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="valid", groups=2)(inputs)  # 4x4 out * 9 * (4/2) * 8 = 2304
    x = keras.layers.Conv2D(2, (1, 3))(x)  # 4x2 out * 3 * 8 * 2 = 384
    x = keras.layers.Flatten()(x)  # 16 features
    outputs = keras.layers.Dense(3)(x)  # 48
    assert count_macs(keras.Model(inputs, outputs)) == 2304 + 384 + 48


def test_nested_block_called_twice_counts_twice() -> None:
    block_in = keras.Input((6, 6, 4))
    block = keras.Model(block_in, keras.layers.Conv2D(4, 1)(block_in), name="block")  # 36 * 4 * 4 = 576
    inputs = keras.Input((6, 6, 4))
    x = block(inputs)
    x = keras.layers.Add()([x, block(x)])
    x = keras.layers.Conv2D(2, 3)(x)  # 4*4 * 9 * 4 * 2 = 1152
    model = keras.Model(inputs, x)
    assert count_macs(model) == 2 * 576 + 1152
    assert count_parameters(model) == 20 + 74  # the shared block's weights count once


def test_sequential_model() -> None:
    model = keras.Sequential([keras.Input((5, 5, 1)), keras.layers.Conv2D(3, 3), keras.layers.Flatten(), keras.layers.Dense(2)])
    assert count_macs(model) == 3 * 3 * 9 * 1 * 3 + 27 * 2


def test_dense_on_sequences_counts_every_position() -> None:
    inputs = keras.Input((7, 4))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    assert count_macs(model) == 7 * 4 * 3


def test_undefined_spatial_size_is_refused() -> None:
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match="undefined dimension"):
        count_macs(model)

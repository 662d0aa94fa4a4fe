"""MobileNet v1 and v2 style students, sized for small inputs such as 28x28 Fashion-MNIST.

The reference MobileNets downsample 32x (224 -> 7). A 28x28 image would vanish, so the tables below
keep the full resolution in the stem and first block and use only two stride-2 steps (28 -> 14 -> 7).
Inputs of 56 px or more get a stride-2 stem as well (see :mod:`pipeline.models.common`). Every
channel count is scaled by ``width_multiplier`` and rounded to a multiple of 8 (min 8), which is what
int8 kernels on ARM prefer. Both builders return LOGITS (no softmax): distillation needs them.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import keras
from keras import layers

from pipeline.models.common import BN, check_input, model_name, scaled, stem_stride



class V1Block(NamedTuple):
    """A depthwise-separable block: 3x3 depthwise (stride) then 1x1 pointwise to ``channels``."""

    channels: int
    stride: int


class V2Stage(NamedTuple):
    """``repeats`` inverted residual blocks: expand 1x1 by ``expansion``, 3x3 depthwise, linear 1x1.

    ``fused`` blocks expand with one full 3x3 conv instead of 1x1 + depthwise (Fused-MBConv, as in
    EfficientNetV2 and MobileNetV4's FusedIB): more MACs, but no wide full-resolution tensor.
    """

    expansion: int
    channels: int
    repeats: int
    stride: int
    fused: bool = False


# Stem channels, then the blocks, then the head width (a 1x1 conv before global pooling, v2 only).
V1_STEM = 24
V1_BLOCKS: tuple[V1Block, ...] = (
    V1Block(48, 1),  # 28x28
    V1Block(64, 2),  # 14x14
    V1Block(96, 1),
    V1Block(128, 2),  # 7x7
    V1Block(128, 1),
    V1Block(160, 1),
)

V2_STEM = 16
V2_STAGES: tuple[V2Stage, ...] = (
    V2Stage(1, 16, 1, 1),  # 28x28
    V2Stage(4, 24, 2, 2),  # 14x14
    V2Stage(4, 40, 3, 2),  # 7x7
)
V2_HEAD = 128

# mobilenet_v2_fused: the 28x28 part of mobilenet_v2 (block 1, and block 2's 1x1 expansion to 64
# channels before its stride-2 depthwise) is where training spends most of its time on a CPU: wide
# full-resolution tensors through BatchNorm and ReLU6, forward and backward. One fused stride-2
# block replaces both, so nothing wider than the 16-channel stem runs at 28x28, for slightly more
# parameters and MACs; the epoch times are in docs/RESULTS.md.
V2_FUSED_STAGES: tuple[V2Stage, ...] = (
    V2Stage(4, 24, 1, 2, fused=True),  # 28x28 -> 14x14 in one full 3x3 conv
    V2Stage(4, 24, 1, 1),  # 14x14
    V2Stage(4, 40, 3, 2),  # 7x7
)


def _conv_bn_relu6(x, filters: int, kernel: int, stride: int, name: str):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(**BN, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x)


def _depthwise_bn_relu6(x, stride: int, name: str):
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(**BN, name=f"{name}_dw_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)


def _head(x, num_classes: int, dropout: float):
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    return layers.Dense(num_classes, name="logits")(x)


def build_mobilenet_v1(
    input_shape: Sequence[int],
    num_classes: int,
    width_multiplier: float = 1.0,
    dropout: float = 0.0,
    blocks: Sequence[V1Block] = V1_BLOCKS,
    stem_channels: int = V1_STEM,
) -> keras.Model:
    """MobileNet v1: conv stem, depthwise-separable blocks (BN + ReLU6 after each conv), GAP, Dense."""
    shape = check_input(input_shape, num_classes)
    inputs = keras.Input(shape, name="image")
    x = _conv_bn_relu6(inputs, scaled(stem_channels, width_multiplier), 3, stem_stride(shape), "stem")
    for i, block in enumerate(blocks, start=1):
        name = f"block{i}"
        x = _depthwise_bn_relu6(x, block.stride, name)
        x = _conv_bn_relu6(x, scaled(block.channels, width_multiplier), 1, 1, f"{name}_pw")
    outputs = _head(x, num_classes, dropout)
    return keras.Model(inputs, outputs, name=model_name("mobilenet_v1", width_multiplier))


def _inverted_residual(x, in_channels: int, expansion: int, out_channels: int, stride: int, name: str, fused: bool = False):
    """Expand (1x1, ReLU6) -> depthwise 3x3 (ReLU6) -> project (1x1, linear); add if shapes match.

    Fused: one 3x3 conv (stride, ReLU6) expands instead of the 1x1 and the depthwise.
    """
    shortcut = x
    if fused:
        x = _conv_bn_relu6(x, in_channels * expansion, 3, stride, f"{name}_fused")
    else:
        if expansion != 1:
            x = _conv_bn_relu6(x, in_channels * expansion, 1, 1, f"{name}_expand")
        x = _depthwise_bn_relu6(x, stride, name)
    x = layers.Conv2D(out_channels, 1, padding="same", use_bias=False, name=f"{name}_project")(x)
    x = layers.BatchNormalization(**BN, name=f"{name}_project_bn")(x)
    if stride == 1 and in_channels == out_channels:
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def build_mobilenet_v2(
    input_shape: Sequence[int],
    num_classes: int,
    width_multiplier: float = 1.0,
    dropout: float = 0.0,
    stages: Sequence[V2Stage] = V2_STAGES,
    stem_channels: int = V2_STEM,
    head_channels: int = V2_HEAD,
    family: str = "mobilenet_v2",
) -> keras.Model:
    """MobileNet v2: conv stem, inverted residual stages (linear bottlenecks), 1x1 head conv, GAP, Dense.

    The expanded width is ``expansion`` times the already rounded input width, so it stays a
    multiple of 8 too.
    """
    shape = check_input(input_shape, num_classes)
    inputs = keras.Input(shape, name="image")
    channels = scaled(stem_channels, width_multiplier)
    x = _conv_bn_relu6(inputs, channels, 3, stem_stride(shape), "stem")
    block = 0
    for stage in stages:
        out_channels = scaled(stage.channels, width_multiplier)
        for repeat in range(stage.repeats):
            block += 1
            stride = stage.stride if repeat == 0 else 1
            x = _inverted_residual(x, channels, stage.expansion, out_channels, stride, f"block{block}", stage.fused)
            channels = out_channels
    if head_channels:
        x = _conv_bn_relu6(x, scaled(head_channels, width_multiplier), 1, 1, "head")
    outputs = _head(x, num_classes, dropout)
    return keras.Model(inputs, outputs, name=model_name(family, width_multiplier))


def build_mobilenet_v2_fused(input_shape: Sequence[int], num_classes: int, width_multiplier: float = 1.0, dropout: float = 0.0) -> keras.Model:
    """MobileNet v2 whose first stride-2 stage is a fused block (see ``V2_FUSED_STAGES``)."""
    return build_mobilenet_v2(
        input_shape, num_classes, width_multiplier, dropout, stages=V2_FUSED_STAGES, family="mobilenet_v2_fused"
    )

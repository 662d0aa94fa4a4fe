"""Helpers shared by the student families: channel rounding, the stem-stride rule, names.

Kept free of Keras so that the registry can describe architectures without importing TensorFlow.
"""

from __future__ import annotations

from typing import Sequence

# Inputs at least this large get a stride-2 stem, so the two stride-2 stages still end near 7x7-14x14
# instead of running every block at full resolution (28x28 Fashion-MNIST keeps a stride-1 stem).
STRIDE2_STEM_MIN_SIDE = 56

# BatchNorm moving-average momentum for every model we build. Keras' default (0.99) needs a few
# hundred steps before the inference statistics mean anything: a one-epoch smoke run on a few
# thousand images then predicts at chance. 0.9 (PyTorch's default) settles in ~30 steps and makes
# no measurable difference to long runs.
BN = {"momentum": 0.9, "epsilon": 1e-3}


def make_divisible(channels: float, divisor: int = 8, min_value: int = 8) -> int:
    """Round ``channels`` to a multiple of ``divisor`` (at least ``min_value``).

    As in the MobileNet reference code, never round down by more than 10%: int8 kernels and SIMD
    units like multiples of 8, but a width multiplier should still mean what it says.
    """
    if channels <= 0:
        raise ValueError(f"channel count must be positive, got {channels}")
    value = max(min_value, int(channels + divisor / 2) // divisor * divisor)
    if value < 0.9 * channels:
        value += divisor
    return value


def scaled(channels: int, width_multiplier: float) -> int:
    """Channels of a layer after applying the width multiplier."""
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
    return make_divisible(channels * width_multiplier)


def stem_stride(input_shape: Sequence[int]) -> int:
    """1 for small inputs (< 56 px on the short side, e.g. 28x28), else 2."""
    height, width = int(input_shape[0]), int(input_shape[1])
    return 2 if min(height, width) >= STRIDE2_STEM_MIN_SIDE else 1


def check_input(input_shape: Sequence[int], num_classes: int) -> tuple[int, int, int]:
    """Validate an (H, W, C) input shape and class count; return the shape as ints."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f"input_shape must be (height, width, channels) with positive sizes, got {tuple(input_shape)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return shape  # type: ignore[return-value]


def format_width(width_multiplier: float) -> str:
    """1 -> '1.0', 0.5 -> '0.5', 0.35 -> '0.35': a stable spelling for model names."""
    text = f"{float(width_multiplier):g}"
    return text if ("." in text or "e" in text) else text + ".0"


def model_name(family: str, width_multiplier: float) -> str:
    """e.g. ``mobilenet_v2_w1.0``; also the student-architecture string in bundle provenance."""
    return f"{family}_w{format_width(width_multiplier)}"

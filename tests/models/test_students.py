"""Student families: size budget, shapes, width multiplier, naming and the registry."""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.models.common import format_width, make_divisible, stem_stride
from pipeline.models.cost import count_macs, count_parameters
from pipeline.models.registry import FAMILIES, build_student, student_name

FMNIST = (28, 28, 1)


@functools.lru_cache(maxsize=None)
def student(family: str, width: float = 1.0, shape: tuple = FMNIST, classes: int = 10) -> keras.Model:
    """Building Keras models is slow; tests only read these, so build each once."""
    return build_student(family, shape, classes, width)


def conv_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]


def test_make_divisible() -> None:
    assert [make_divisible(v) for v in (1, 8, 11, 12, 16 * 0.35, 24 * 0.75, 96 * 1.3, 100)] == [8, 8, 16, 16, 8, 24, 128, 104]
    assert make_divisible(37.0) == 40 and make_divisible(36.0) == 40 and make_divisible(33) == 32
    assert make_divisible(9.6) == 16  # rounding to 8 would lose more than 10%, so go up


def test_names() -> None:
    assert format_width(1) == "1.0" and format_width(0.5) == "0.5" and format_width(0.35) == "0.35"
    assert student_name("mobilenet_v2", 1.0) == "mobilenet_v2_w1.0"
    assert student("squeezenet", 0.5).name == "squeezenet_w0.5"


def test_unknown_family() -> None:
    with pytest.raises(ConfigError, match="Unknown student family 'resnet18'.*mobilenet_v1, mobilenet_v2, mobilenet_v2_fused, squeezenet"):
        build_student("resnet18", FMNIST, 10, 1.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_default_size_budget(family: str) -> None:
    model = student(family)
    params = count_parameters(model)
    assert 40_000 <= params < 100_000, f"{family}: {params} parameters"
    macs = count_macs(model)
    assert 1_000_000 < macs < 20_000_000, f"{family}: {macs} MACs"
    assert model.name == f"{family}_w1.0"


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_out_and_two_stride_two_steps_on_28px(family: str) -> None:
    model = student(family)
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    gap = [layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)][0]
    assert tuple(gap.input.shape[1:3]) == (7, 7)
    for layer in model.layers:  # nothing squashes the output into probabilities
        assert not isinstance(layer, keras.layers.Softmax)
        assert getattr(layer, "activation", None) is not keras.activations.softmax
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    out = np.asarray(model(x, training=False))
    assert out.shape == (4, 10) and not np.allclose(out.sum(axis=1), 1.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_width_multiplier_scales_and_rounds_to_eight(family: str) -> None:
    sizes = [count_parameters(student(family, w)) for w in (0.35, 0.5, 1.0, 1.3)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] / 4
    for w in (0.35, 1.3):
        for layer in conv_layers(student(family, w)):
            if isinstance(layer, keras.layers.Conv2D) and layer.name != "classifier":
                assert layer.filters % 8 == 0 and layer.filters >= 8, (w, layer.name, layer.filters)


@pytest.mark.parametrize("family", FAMILIES)
def test_larger_and_colour_inputs(family: str) -> None:
    assert stem_stride((28, 28, 1)) == 1 and stem_stride((64, 64, 3)) == 2
    model = student(family, 0.5, (64, 64, 3), 5)
    gap = [layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)][0]
    assert tuple(gap.input.shape[1:3]) == (8, 8)  # stride-2 stem, then the two stride-2 stages
    assert model.output_shape == (None, 5)


def test_family_structure() -> None:
    v1, v2, sq = student("mobilenet_v1"), student("mobilenet_v2"), student("squeezenet")
    kinds = lambda m, t: sum(isinstance(layer, t) for layer in m.layers)  # noqa: E731
    assert kinds(v1, keras.layers.DepthwiseConv2D) >= 5 and kinds(v1, keras.layers.Add) == 0
    assert kinds(v2, keras.layers.DepthwiseConv2D) >= 5 and kinds(v2, keras.layers.Add) >= 2  # inverted residuals
    relu6 = [layer for layer in v2.layers if isinstance(layer, keras.layers.ReLU)]
    assert relu6 and all(float(layer.max_value) == 6.0 for layer in relu6)
    assert all(not name.endswith("_project_relu6") for name in (layer.name for layer in v2.layers))  # linear bottleneck
    assert kinds(sq, keras.layers.Concatenate) >= 4 and kinds(sq, keras.layers.DepthwiseConv2D) == 0


def test_fused_v2_keeps_full_resolution_narrow() -> None:
    """The fused variant exists to train faster on CPUs: no tensor wider than the stem at 28x28."""
    v2, fused = student("mobilenet_v2"), student("mobilenet_v2_fused")

    def widest_at_full_resolution(model: keras.Model) -> int:
        return max(int(layer.output.shape[-1]) for layer in model.layers[1:] if len(layer.output.shape) == 4 and layer.output.shape[1] == 28)

    assert widest_at_full_resolution(v2) == 64  # block 2 expands to 64 channels before its stride-2 depthwise
    assert widest_at_full_resolution(fused) == 16
    block1 = fused.get_layer("block1_fused_conv")
    assert block1.kernel_size == (3, 3) and block1.strides == (2, 2) and block1.filters == 64
    depthwise = [layer for layer in fused.layers if isinstance(layer, keras.layers.DepthwiseConv2D)]
    assert len(depthwise) == 4 and all(layer.input.shape[1] <= 14 for layer in depthwise)
    assert not any(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in v2.layers[:3])  # v2 unchanged: stem first
    assert [layer.name for layer in v2.layers if layer.name.endswith("_dw")][0] == "block1_dw"

"""Model cost: parameter count and multiply-accumulates (MACs) for one image (batch size 1).

MACs are counted by walking the functional graph node by node, using the shapes Keras recorded
when the model was built, so a block used twice counts twice and nested models are followed.
Counted: Conv1D/2D/3D (including grouped), DepthwiseConv1D/2D, SeparableConv1D/2D, Conv*Transpose
and Dense. Ignored, by design: bias adds, BatchNormalization (folded into the preceding conv when
converting to TFLite), activations, pooling, Add/Concatenate, reshapes. Those are elementwise or
memory-bound and are not what "MACs" means in model-efficiency tables.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import keras


def count_parameters(model: keras.Model, trainable_only: bool = False) -> int:
    """Every weight of the model (BN moving statistics included, as in ``model.count_params()``),
    shared variables counted once. ``trainable_only`` counts only what the optimizer updates."""
    variables = model.trainable_weights if trainable_only else model.weights
    unique = {id(v): v for v in variables}
    total = 0
    for variable in unique.values():
        size = 1
        for dim in variable.shape:
            size *= int(dim)
        total += size
    return total


def functional_graph(model: keras.Model):
    """The Functional graph behind ``model`` (Sequential models wrap one), for walking its nodes."""
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise ValueError(f"Sequential model '{model.name}' has no input shape yet; build it with keras.Input first")
        return functional
    if getattr(model, "_nodes_by_depth", None) is None:
        raise ValueError(f"model '{model.name}' is not a functional or Sequential model; its layers cannot be walked")
    return model


def _nodes(model: keras.Model) -> Iterator:
    graph = functional_graph(model)
    by_depth = graph._nodes_by_depth  # Keras 3 Functional internals: {depth: [Node, ...]}
    for depth in sorted(by_depth, reverse=True):
        yield from by_depth[depth]


def _prod(values: Sequence[int]) -> int:
    total = 1
    for value in values:
        total *= int(value)
    return total


def _known(shape: Sequence, layer: keras.layers.Layer) -> tuple[int, ...]:
    dims = tuple(shape[1:])
    if any(d is None for d in dims):
        raise ValueError(f"layer '{layer.name}' has an undefined dimension in {tuple(shape)}; MACs need fixed input sizes")
    return tuple(int(d) for d in dims)


def layer_macs(layer: keras.layers.Layer, input_shape: Sequence, output_shape: Sequence) -> int:
    """MACs of one call of ``layer`` for one sample; 0 for layers that are not counted."""
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        out = _known(output_shape, layer)
        cin = _known(input_shape, layer)[-1]
        return _prod(out[:-1]) * _prod(layer.kernel_size) * cin * int(layer.depth_multiplier)
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        out = _known(output_shape, layer)
        cin = _known(input_shape, layer)[-1]
        mid = cin * int(layer.depth_multiplier)
        return _prod(out[:-1]) * (_prod(layer.kernel_size) * mid + mid * int(layer.filters))
    if isinstance(layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)):
        inp = _known(input_shape, layer)
        return _prod(inp[:-1]) * _prod(layer.kernel_size) * inp[-1] * int(layer.filters)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        out = _known(output_shape, layer)
        cin = _known(input_shape, layer)[-1]
        return _prod(out[:-1]) * _prod(layer.kernel_size) * (cin // int(layer.groups)) * int(layer.filters)
    if isinstance(layer, keras.layers.Dense):
        inp = _known(input_shape, layer)
        return _prod(inp[:-1]) * inp[-1] * int(layer.units)
    return 0


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass for a single image (see the module docstring)."""
    total = 0
    for node in _nodes(model):
        operation = node.operation
        if isinstance(operation, keras.Model):
            total += count_macs(operation)
            continue
        if not node.input_tensors or not node.output_tensors:
            continue
        total += layer_macs(operation, node.input_tensors[0].shape, node.output_tensors[0].shape)
    return total

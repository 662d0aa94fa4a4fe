"""Widen one layer of a trained Keras model so it does more work but predicts exactly the same.

The bench needs bundles of the SAME model that are genuinely slower by a known number of MACs.
One conv (the *producer*) gets extra output channels. Each extra channel is a copy of an existing
one (kernel, bias, and the BatchNorm/depthwise weights on the way), and its outgoing weights in
every *consumer* (the next channel-mixing Conv2D or Dense) are zero. So:

* float models: the extra products are ``0 * x``, exactly nothing, added to every output;
* int8 models: the widened tensors hold the original channels plus duplicates of them, so their
  calibrated min/max (hence scale and zero point) are unchanged, the per-channel weight scales of
  the copies equal those of their originals, and a zero weight quantizes to exactly 0. The integer
  accumulators of every original output are therefore bit-identical.

Only plain chains are widened: producer -> channel-wise layers (BatchNorm, activations, depthwise,
pooling, dropout, padding) -> consumers, with no Add/Concatenate or model output on the way, which
would need the extra channels to be matched elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np

from pipeline.models.cost import count_macs, layer_macs

# Layers a widened tensor may pass through: they treat every channel alone.
_CHANNELWISE = (
    keras.layers.BatchNormalization,
    keras.layers.ReLU,
    keras.layers.Activation,
    keras.layers.LeakyReLU,
    keras.layers.Dropout,
    keras.layers.DepthwiseConv2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.ZeroPadding2D,
)

# TFLite's dynamic-range quantizer keeps weight tensors smaller than this in float (its
# ``min_elements_for_weights`` default).
DYNAMIC_RANGE_MIN_WEIGHTS = 1024


@dataclass(frozen=True)
class WidenPlan:
    """Where extra channels can go, and what each one costs (exactly, in MACs for one image)."""

    producer: str
    channels: int  # the producer's filters today
    passthrough: tuple[str, ...]
    consumers: tuple[str, ...]
    macs_per_channel: int
    consumer_weights: int  # the smallest consumer kernel, in elements, before widening


def _is_producer(layer: keras.layers.Layer) -> bool:
    return type(layer) is keras.layers.Conv2D and int(layer.groups) == 1


def _is_consumer(layer: keras.layers.Layer) -> bool:
    return (type(layer) is keras.layers.Conv2D and int(layer.groups) == 1) or type(layer) is keras.layers.Dense


def _single_node(layer: keras.layers.Layer):
    """The one call of ``layer`` in the graph, or None when it is shared (called more than once)."""
    nodes = layer._inbound_nodes  # Keras 3 Operation internals
    return nodes[0] if len(nodes) == 1 else None


def _node_macs(layer: keras.layers.Layer) -> int:
    node = _single_node(layer)
    return layer_macs(layer, node.input_tensors[0].shape, node.output_tensors[0].shape)


def _followers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    return [node.operation for node in layer._outbound_nodes]


def plan_for(model: keras.Model, name: str) -> Optional[WidenPlan]:
    """The plan for widening layer ``name``, or None when that layer cannot be widened safely."""
    producer = model.get_layer(name)
    if not _is_producer(producer) or _single_node(producer) is None:
        return None
    outputs = {id(t) for t in model.outputs}
    channels = int(producer.filters)
    per_channel = _node_macs(producer) // channels
    passthrough: list[str] = []
    consumers: list[str] = []
    frontier = [producer]
    while frontier:
        layer = frontier.pop()
        if any(id(t) in outputs for t in _single_node(layer).output_tensors):
            return None  # the model's output would change shape
        followers = _followers(layer)
        if not followers:
            return None
        for follower in followers:
            if _single_node(follower) is None or len(_single_node(follower).input_tensors) != 1:
                return None  # shared layer, Add, Concatenate...
            if _is_consumer(follower):
                consumers.append(follower.name)
                per_channel += _node_macs(follower) // channels
            elif isinstance(follower, _CHANNELWISE):
                if isinstance(follower, keras.layers.DepthwiseConv2D):
                    if int(follower.depth_multiplier) != 1:
                        return None
                    per_channel += _node_macs(follower) // channels
                passthrough.append(follower.name)
                frontier.append(follower)
            else:
                return None
    smallest = min(int(np.prod(model.get_layer(c).kernel.shape)) for c in consumers)
    return WidenPlan(name, channels, tuple(passthrough), tuple(consumers), per_channel, smallest)


def plans(model: keras.Model) -> list[WidenPlan]:
    """Every widenable layer, in graph order (the last one is closest to the classifier)."""
    found = [plan_for(model, layer.name) for layer in model.layers]
    return [plan for plan in found if plan is not None]


def choose_plan(model: keras.Model, max_step: float = 0.005) -> WidenPlan:
    """The widenable layer nearest the classifier whose one-channel step is at most ``max_step`` of
    the model's MACs, so rounding to whole channels misses a target by at most ``max_step / 2``.

    Layers whose consumers are already big enough for dynamic-range quantization come first: the
    converter leaves kernels under ``DYNAMIC_RANGE_MIN_WEIGHTS`` elements in float, so widening the
    input of a small classifier would quantize it in the wide model only and change its outputs.
    (A depthwise kernel on the way may still cross that size as it widens: dynamic-range rungs
    can then differ from the base in the fourth decimal of a logit, which the ladder's top-1 check
    guards.)
    """
    base = count_macs(model)
    candidates = plans(model)
    fine = [plan for plan in candidates if plan.macs_per_channel <= max_step * base]
    fine = [plan for plan in fine if plan.consumer_weights >= DYNAMIC_RANGE_MIN_WEIGHTS] or fine
    if not fine:
        names = ", ".join(p.producer for p in candidates) or "none"
        raise ValueError(
            f"model '{model.name}' has no layer whose extra channel costs at most {max_step:.1%} of its {base} MACs "
            f"(widenable layers: {names})"
        )
    return fine[-1]


def channels_for(plan: WidenPlan, base_macs: int, extra: float) -> int:
    """Whole extra channels nearest to ``extra`` (a fraction of ``base_macs``)."""
    if extra < 0:
        raise ValueError(f"extra MACs must not be negative, got {extra}")
    return int(round(extra * base_macs / plan.macs_per_channel))


def _copy_channels(weights: np.ndarray, axis: int, source: np.ndarray) -> np.ndarray:
    return np.concatenate([weights, np.take(weights, source, axis=axis)], axis=axis)


def _zero_inputs(weights: np.ndarray, axis: int, extra: int) -> np.ndarray:
    shape = list(weights.shape)
    shape[axis] = extra
    return np.concatenate([weights, np.zeros(shape, weights.dtype)], axis=axis)


def _widened_weights(layer: keras.layers.Layer, plan: WidenPlan, source: np.ndarray) -> list[np.ndarray]:
    """``layer``'s weights for the widened model (unchanged for layers outside the plan)."""
    weights = layer.get_weights()
    if layer.name == plan.producer:  # kernel (kh, kw, cin, C), bias (C,)
        return [_copy_channels(w, w.ndim - 1, source) for w in weights]
    if layer.name in plan.passthrough:  # BN vectors (C,); depthwise kernel (kh, kw, C, 1), bias (C,)
        return [_copy_channels(w, 2 if w.ndim == 4 else 0, source) for w in weights]
    if layer.name in plan.consumers:  # conv kernel (kh, kw, C, cout) or dense (C, units); bias unchanged
        kernel, *rest = weights
        return [_zero_inputs(kernel, kernel.ndim - 2, len(source)), *rest]
    return weights


def widen(model: keras.Model, plan: WidenPlan, extra_channels: int) -> keras.Model:
    """A copy of ``model`` with ``extra_channels`` more filters in ``plan.producer`` (see module doc).

    Extra channel j copies original channel ``j % channels``, so a producer may grow past twice its
    width.
    """
    if extra_channels <= 0:
        raise ValueError(f"extra_channels must be positive, got {extra_channels}")
    config = model.get_config()
    touched = {plan.producer, *plan.passthrough, *plan.consumers}
    for layer_config in config["layers"]:
        name = layer_config["config"]["name"]
        if name == plan.producer:
            layer_config["config"]["filters"] = plan.channels + extra_channels
        if name in touched:
            layer_config.pop("build_config", None)  # recorded input shapes: rebuild at the new width
    wide = keras.Model.from_config(config)
    source = np.arange(extra_channels) % plan.channels
    for layer in model.layers:
        weights = _widened_weights(layer, plan, source)
        if weights:
            wide.get_layer(layer.name).set_weights(weights)
    return wide

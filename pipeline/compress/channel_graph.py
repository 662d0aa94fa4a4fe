"""Which output channels of a Keras model may change width, and which must change together.

A *channel group* is the output channels of one Conv/Dense layer (the source), followed through
channel-wise layers (BatchNorm, activations, dropout, pooling, padding, depthwise convs with
depth_multiplier 1, Concatenate by offset) to the Conv/Dense layers that read them as input
channels. An elementwise merge (Add, as in every residual block) ties the groups it sums: their
sources must keep the *same* channels. A source whose channels reach the model output, a layer
not understood here, or an Add that also sums something of fixed width (the model input, a
Concatenate) cannot be narrowed; the reason is returned with it. This is the analysis half of
:mod:`pipeline.compress.structured`, which ranks the channels and rebuilds the narrower model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import keras

from pipeline.compress.magnitude import matches
from pipeline.errors import ConfigError
from pipeline.models.cost import functional_graph

CONV_TYPES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
# Elementwise merges: channel c of the output depends on channel c of every input only.
_TIE_TYPES = (
    keras.layers.Add, keras.layers.Subtract, keras.layers.Average,
    keras.layers.Maximum, keras.layers.Minimum, keras.layers.Multiply,
)
DEPTHWISE_TYPES = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
# Layers that act on each channel separately (no weights, or weights handled below).
_CHANNELWISE_TYPES = (
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Activation,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.Identity,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.UpSampling3D,
)


@dataclass
class ChannelGraph:
    """The layers of a model with who reads whom, and each output's width and rank."""

    order: list[str]  # layer names, inputs first
    layers: dict[str, keras.layers.Layer]
    producers: dict[str, list[str]]  # layer -> the layers whose outputs it reads, in argument order
    consumers: dict[str, list[str]]
    channels: dict[str, int]  # width of each layer's (first) output
    ranks: dict[str, int]
    outputs: set[str]
    shared: set[str]  # layers called more than once (not prunable: one width, several uses)
    position: dict[str, int]  # index in ``model.layers``, to report layers in the order users see


def _functional(model: keras.Model):
    try:
        return functional_graph(model)
    except ValueError as exc:
        raise ConfigError(f"Structured pruning needs a built functional or Sequential model: {exc}.") from None


def channel_graph(model: keras.Model) -> ChannelGraph:
    """The layer graph from Keras 3 Functional internals (``_nodes_by_depth``: {depth: [Node]})."""
    functional = _functional(model)
    graph = ChannelGraph([], {}, {}, {}, {}, {}, set(), set(), {})
    calls: dict[str, int] = {}
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        for node in functional._nodes_by_depth[depth]:
            layer = node.operation
            name = layer.name
            calls[name] = calls.get(name, 0) + 1
            if name not in graph.layers:
                graph.order.append(name)
                graph.layers[name] = layer
                graph.consumers.setdefault(name, [])
            inputs = [t._keras_history.operation.name for t in node.input_tensors]
            graph.producers[name] = inputs
            for producer in inputs:
                graph.consumers.setdefault(producer, []).append(name)
            if node.output_tensors:
                shape = node.output_tensors[0].shape
                graph.ranks[name] = len(shape)
                graph.channels[name] = int(shape[-1]) if shape[-1] is not None else 0
    graph.shared = {name for name, count in calls.items() if count > 1}
    graph.outputs = {t._keras_history.operation.name for t in functional.outputs}
    graph.position = {layer.name: index for index, layer in enumerate(functional.layers)}
    return graph


def _last_axis(layer: keras.layers.Layer, rank: int) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last" and rank >= 2


def is_conv_or_dense(layer: keras.layers.Layer) -> bool:
    """A layer with its own filters/units that reads channels on the last axis."""
    if isinstance(layer, keras.layers.Dense):
        return True
    return isinstance(layer, CONV_TYPES) and int(layer.groups) == 1 and layer.data_format == "channels_last"


def _softmax(layer: keras.layers.Layer) -> bool:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") in ("softmax", "log_softmax")


def layer_kind(layer: keras.layers.Layer, rank: int) -> str:
    """'consumer' (reads input channels), 'channelwise', 'tie' (elementwise merge), 'concat', or 'blocker'."""
    if isinstance(layer, keras.Model):
        return "blocker"
    if isinstance(layer, _TIE_TYPES):
        return "tie"
    if is_conv_or_dense(layer):
        return "consumer"
    if isinstance(layer, DEPTHWISE_TYPES):
        ok = int(layer.depth_multiplier) == 1 and layer.data_format == "channels_last"
        return "channelwise" if ok else "blocker"
    if isinstance(layer, keras.layers.BatchNormalization):
        return "channelwise" if layer.axis in (-1, rank - 1) else "blocker"
    if isinstance(layer, keras.layers.Concatenate):
        return "concat" if layer.axis in (-1, rank - 1) else "blocker"
    if isinstance(layer, _CHANNELWISE_TYPES):
        return "channelwise" if _last_axis(layer, rank) and not _softmax(layer) else "blocker"
    return "blocker"


def _reach(graph: ChannelGraph, source: str) -> Optional[str]:
    """Follow ``source``'s channels to their consumers; the reason they cannot be pruned, or None."""
    stack, seen = [source], {source}
    while stack:
        name = stack.pop()
        if name in graph.outputs:
            return "is a model output" if name == source else f"reaches the model output through '{name}'"
        for consumer in graph.consumers.get(name, []):
            layer = graph.layers[consumer]
            if consumer in graph.shared:
                return f"feeds shared layer '{consumer}'"
            kind = layer_kind(layer, graph.ranks.get(consumer, 0))
            if kind == "blocker":
                return f"feeds {type(layer).__name__} '{consumer}'"
            if kind == "tie" and len({graph.channels.get(p) for p in graph.producers.get(consumer, [])}) != 1:
                return f"feeds {type(layer).__name__} '{consumer}', which broadcasts inputs of different widths"
            if kind != "consumer" and consumer not in seen:
                seen.add(consumer)
                stack.append(consumer)
    return None


def prunable_sources(graph: ChannelGraph, skip: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The Conv/Dense layers whose width may change, and the others with the reason why not."""
    prunable, skipped = [], []
    for name in sorted(graph.order, key=lambda n: graph.position.get(n, len(graph.position))):
        layer = graph.layers[name]
        if not isinstance(layer, (*CONV_TYPES, keras.layers.Dense)):
            continue
        if not is_conv_or_dense(layer):
            reason = f"is a grouped or channels_first {type(layer).__name__}"
        elif matches(name, skip):
            reason = "listed in skip"
        elif name in graph.shared:
            reason = "is shared (called more than once)"
        elif _softmax(layer):
            reason = "ends in a softmax over its channels"
        else:
            reason = _reach(graph, name)
        if reason is None:
            prunable.append(name)
        else:
            skipped.append((name, reason))
    return prunable, skipped


class _Ties:
    """Union-find over channel spaces: which sources an elementwise merge forces to keep the same
    channels. A space that is not a source's output (the model input, a Concatenate, a layer that
    blocks pruning) is *fixed*: every source tied to it keeps its full width."""

    def __init__(self, graph: ChannelGraph) -> None:
        self.parent: dict[str, str] = {}
        self.merges: dict[str, list[str]] = {}  # root -> the merge layers that joined its group, for messages
        space: dict[str, str] = {}  # layer -> the channel space of its output
        for name in graph.order:
            kind = layer_kind(graph.layers[name], graph.ranks.get(name, 0))
            producers = graph.producers.get(name, [])
            if kind == "consumer":
                space[name] = self._new(name)
            elif kind == "channelwise" and producers:
                space[name] = space[producers[0]]
            elif kind == "tie" and producers:
                for other in producers[1:]:
                    self._union(space[producers[0]], space[other], name)
                space[name] = space[producers[0]]
            else:
                space[name] = self._new(f"fixed:{name}")

    def _new(self, key: str) -> str:
        self.parent[key] = key
        return key

    def find(self, key: str) -> str:
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def _union(self, a: str, b: str, merge: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if rb.startswith("fixed:") and not ra.startswith("fixed:"):
            ra, rb = rb, ra  # a fixed space stays the root, so the whole group is known to be fixed
        self.parent[rb] = ra
        self.merges[ra] = [*self.merges.get(ra, []), *self.merges.pop(rb, []), merge]

    def groups(self, sources: Sequence[str]) -> dict[str, list[str]]:
        """Root -> the sources in that tied group (a lone source is its own group)."""
        out: dict[str, list[str]] = {}
        for name in sources:
            out.setdefault(self.find(name), []).append(name)
        return out


def tie_sources(graph: ChannelGraph, prunable: list[str], skipped: list[tuple[str, str]]) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """Split the prunable sources into tied groups; a group tied to something fixed, or to a source
    that is itself skipped, is skipped whole (each member with the reason)."""
    ties = _Ties(graph)
    blocked = {name: reason for name, reason in skipped}
    members = ties.groups([*prunable, *(name for name, _ in skipped if name in ties.parent)])
    groups, extra = [], []
    for root, names in members.items():
        live = [n for n in names if n not in blocked]
        if not live:
            continue
        merges = ", ".join(f"'{m}'" for m in ties.merges.get(root, []))
        if root.startswith("fixed:"):
            why = f"is tied by {merges} to '{root[len('fixed:'):]}', whose width cannot change"
        elif len(live) < len(names):
            dead = next(n for n in names if n in blocked)
            why = f"is tied by {merges} to '{dead}' ({blocked[dead]})"
        else:
            groups.append(live)
            continue
        extra.extend((name, why) for name in live)
    return groups, extra


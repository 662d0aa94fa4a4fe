"""Structured channel pruning: remove whole filters and rebuild narrower layers.

Zeroed weights (:mod:`pipeline.compress.magnitude`) leave a dense .tflite just as large and slow;
dropping channels shrinks every tensor they touch. A *channel group* is the output channels of one
Conv/Dense layer (the source), followed through channel-wise layers (BatchNorm, activations,
dropout, pooling, padding, depthwise convs with depth_multiplier 1, Concatenate by offset) to the
Conv/Dense layers that read them as input channels. Removing channel ``c`` removes filter ``c`` of
the source, entry ``c`` of every channel-wise layer on the way, and input slice ``c`` of every
consumer. An elementwise merge (Add, as in every residual block) ties the groups it sums: their
sources must keep the *same* channels, so they are pruned together as one group ranked by their
summed, per-source normalised importance (the "dependency groups" of DepGraph-style pruners). A
group whose channels reach the model output, a layer not understood here, or an Add that also sums
something of fixed width (the model input, a Concatenate) is left alone and listed in
:attr:`StructuredResult.skipped` with the reason: the logits and the input must keep their width.

The narrower model is rebuilt from the original's config and gets the sliced weights, so
with ``fraction=0`` it computes exactly what the original did.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence

import keras
import numpy as np

from pipeline.compress.magnitude import matches
from pipeline.errors import ConfigError
from pipeline.models.cost import count_macs, count_parameters, functional_graph

log = logging.getLogger(__name__)

Importance = Literal["l1", "l2", "bn"]
IMPORTANCES: tuple[str, ...] = ("l1", "l2", "bn")

_CONV_TYPES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
# Elementwise merges: channel c of the output depends on channel c of every input only.
_TIE_TYPES = (
    keras.layers.Add, keras.layers.Subtract, keras.layers.Average,
    keras.layers.Maximum, keras.layers.Minimum, keras.layers.Multiply,
)
_DEPTHWISE_TYPES = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
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
class ChannelGroup:
    """One pruned group: the source layer, its width before and after, and how it was ranked."""

    layer: str
    channels: int
    kept: int
    importance: str  # the criterion actually used ("l1", "l2", "bn", or "l1" when "bn" had no BatchNorm)
    kept_importance: float  # share of the group's total importance that the kept channels hold
    tied: list[str] = field(default_factory=list)  # the other sources an Add ties to this one (same channels kept)


@dataclass
class StructuredResult:
    """The narrower model and what happened to every Conv/Dense layer whose width could change."""

    model: keras.Model
    groups: list[ChannelGroup]
    skipped: list[tuple[str, str]]  # (layer, reason it was not pruned)
    parameters_before: int
    parameters_after: int
    macs_before: Optional[int]  # None when the model has undefined spatial sizes
    macs_after: Optional[int]
    fraction: float = 0.0
    importance: str = "l1"
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Plain data (no model) for reports and provenance."""
        return {
            "fraction": self.fraction,
            "importance": self.importance,
            "groups": [vars(group).copy() for group in self.groups],
            "skipped": [{"layer": layer, "reason": reason} for layer, reason in self.skipped],
            "parameters_before": self.parameters_before,
            "parameters_after": self.parameters_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------- graph


@dataclass
class _Graph:
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


def _graph(model: keras.Model) -> _Graph:
    """The layer graph from Keras 3 Functional internals (``_nodes_by_depth``: {depth: [Node]})."""
    functional = _functional(model)
    graph = _Graph([], {}, {}, {}, {}, {}, set(), set(), {})
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


def _is_conv_or_dense(layer: keras.layers.Layer) -> bool:
    """A layer with its own filters/units that reads channels on the last axis."""
    if isinstance(layer, keras.layers.Dense):
        return True
    return isinstance(layer, _CONV_TYPES) and int(layer.groups) == 1 and layer.data_format == "channels_last"


def _softmax(layer: keras.layers.Layer) -> bool:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") in ("softmax", "log_softmax")


def _kind(layer: keras.layers.Layer, rank: int) -> str:
    """'consumer' (reads input channels), 'channelwise', 'tie' (elementwise merge), 'concat', or 'blocker'."""
    if isinstance(layer, keras.Model):
        return "blocker"
    if isinstance(layer, _TIE_TYPES):
        return "tie"
    if _is_conv_or_dense(layer):
        return "consumer"
    if isinstance(layer, _DEPTHWISE_TYPES):
        ok = int(layer.depth_multiplier) == 1 and layer.data_format == "channels_last"
        return "channelwise" if ok else "blocker"
    if isinstance(layer, keras.layers.BatchNormalization):
        return "channelwise" if layer.axis in (-1, rank - 1) else "blocker"
    if isinstance(layer, keras.layers.Concatenate):
        return "concat" if layer.axis in (-1, rank - 1) else "blocker"
    if isinstance(layer, _CHANNELWISE_TYPES):
        return "channelwise" if _last_axis(layer, rank) and not _softmax(layer) else "blocker"
    return "blocker"


def _reach(graph: _Graph, source: str) -> Optional[str]:
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
            kind = _kind(layer, graph.ranks.get(consumer, 0))
            if kind == "blocker":
                return f"feeds {type(layer).__name__} '{consumer}'"
            if kind == "tie" and len({graph.channels.get(p) for p in graph.producers.get(consumer, [])}) != 1:
                return f"feeds {type(layer).__name__} '{consumer}', which broadcasts inputs of different widths"
            if kind != "consumer" and consumer not in seen:
                seen.add(consumer)
                stack.append(consumer)
    return None


def _sources(graph: _Graph, skip: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The Conv/Dense layers whose width may change, and the others with the reason why not."""
    prunable, skipped = [], []
    for name in sorted(graph.order, key=lambda n: graph.position.get(n, len(graph.position))):
        layer = graph.layers[name]
        if not isinstance(layer, (*_CONV_TYPES, keras.layers.Dense)):
            continue
        if not _is_conv_or_dense(layer):
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

    def __init__(self, graph: _Graph) -> None:
        self.parent: dict[str, str] = {}
        self.merges: dict[str, list[str]] = {}  # root -> the merge layers that joined its group, for messages
        space: dict[str, str] = {}  # layer -> the channel space of its output
        for name in graph.order:
            kind = _kind(graph.layers[name], graph.ranks.get(name, 0))
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


def _tie_sources(graph: _Graph, prunable: list[str], skipped: list[tuple[str, str]]) -> tuple[list[list[str]], list[tuple[str, str]]]:
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


# ---------------------------------------------------------------- ranking


def kept_channels(channels: int, fraction: float, round_to: int = 8) -> int:
    """How many of ``channels`` to keep when removing ``fraction`` of them.

    Rounded to the nearest multiple of ``round_to`` (int8 kernels like multiples of 8), never
    below ``round_to`` nor above ``channels``, and at least 1.
    """
    if fraction == 0:
        return channels
    kept = max(1, int(math.floor(channels * (1.0 - fraction) + 0.5)))
    if round_to > 1:
        kept = max(round_to, int(math.floor(kept / round_to + 0.5)) * round_to)
    return min(kept, channels)


def _following_batchnorm(graph: _Graph, source: str) -> Optional[keras.layers.Layer]:
    consumers = graph.consumers.get(source, [])
    if len(consumers) == 1 and isinstance(graph.layers[consumers[0]], keras.layers.BatchNormalization):
        return graph.layers[consumers[0]]
    return None


def _scores(graph: _Graph, source: str, importance: str) -> tuple[np.ndarray, str]:
    """One importance score per output channel of ``source``, and the criterion used."""
    layer = graph.layers[source]
    if importance == "bn":
        bn = _following_batchnorm(graph, source)
        if bn is not None and bn.gamma is not None:
            return np.abs(keras.ops.convert_to_numpy(bn.gamma)), "bn"
        log.warning("layer '%s' is not followed by a BatchNormalization with a scale; ranking its channels by L1 norm", source)
        importance = "l1"
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    axes = tuple(range(kernel.ndim - 1))
    if importance == "l2":
        return np.sqrt(np.square(kernel).sum(axis=axes)), "l2"
    return np.abs(kernel).sum(axis=axes), "l1"


def _select(scores: np.ndarray, kept: int) -> np.ndarray:
    """Indices of the ``kept`` highest scores, in their original order (stable for ties)."""
    return np.sort(np.argsort(-scores, kind="stable")[:kept])


# ---------------------------------------------------------------- rebuild


def _propagate(graph: _Graph, keep: dict[str, np.ndarray]) -> dict[str, Optional[np.ndarray]]:
    """Kept channel indices of every layer's output (None: all of them), in graph order."""
    out: dict[str, Optional[np.ndarray]] = {}
    for name in graph.order:
        layer = graph.layers[name]
        inputs = [out.get(p) for p in graph.producers.get(name, [])]
        kind = _kind(layer, graph.ranks.get(name, 0))
        if name in keep:
            out[name] = keep[name]
        elif kind in ("channelwise", "tie") and inputs:
            out[name] = inputs[0]  # a tie's inputs were pruned as one group: they all keep the same channels
        elif kind == "concat" and any(i is not None for i in inputs):
            parts, offset = [], 0
            for producer, indices in zip(graph.producers[name], inputs):
                width = graph.channels[producer]
                parts.append(offset + (np.arange(width) if indices is None else indices))
                offset += width
            out[name] = np.concatenate(parts)
        else:
            out[name] = None
    return out


def _slice_weights(
    layer: keras.layers.Layer, weights: list[np.ndarray], inputs: Optional[np.ndarray], outputs: Optional[np.ndarray]
) -> list[np.ndarray]:
    """The old layer's weights cut to the kept input and output channels."""
    if _is_conv_or_dense(layer):
        kernel = weights[0]
        if inputs is not None:
            kernel = np.take(kernel, inputs, axis=-2)
        if outputs is not None:
            kernel = np.take(kernel, outputs, axis=-1)
        rest = [w[outputs] if outputs is not None else w for w in weights[1:]]
        return [kernel, *rest]
    if inputs is None:
        return weights
    if isinstance(layer, _DEPTHWISE_TYPES):
        return [np.take(weights[0], inputs, axis=-2), *(w[inputs] for w in weights[1:])]
    return [w[inputs] for w in weights]  # BatchNormalization: gamma, beta, mean, variance


def _rebuild(model: keras.Model, graph: _Graph, widths: dict[str, int], kept: dict[str, Optional[np.ndarray]]) -> keras.Model:
    """A new model from the old config with narrower sources, holding the sliced weights.

    Built from ``get_config`` rather than ``clone_model``: cloning recompiles the model, which
    fails for losses that cannot be deserialized (edgeship's ``kd_loss`` closure).
    """
    config = model.get_config()
    for entry in config["layers"]:
        entry.pop("build_config", None)  # recorded input widths are stale; layers build on their new inputs
        name = entry["config"].get("name")
        if name in widths:
            key = "units" if isinstance(graph.layers[name], keras.layers.Dense) else "filters"
            entry["config"][key] = widths[name]
    custom = {type(layer).__name__: type(layer) for layer in graph.layers.values()}
    with keras.saving.custom_object_scope(custom):
        new = type(model).from_config(config)
    new_layers = _graph(new).layers
    for name in graph.order:
        old_layer = graph.layers[name]
        if not old_layer.weights:
            continue
        inputs = graph.producers.get(name, [])
        in_kept = kept.get(inputs[0]) if len(inputs) == 1 else None
        out_kept = kept.get(name) if name in widths else None
        new_layers[name].set_weights(_slice_weights(old_layer, old_layer.get_weights(), in_kept, out_kept))
    return new


def _macs(model: keras.Model) -> Optional[int]:
    try:
        return count_macs(model)
    except ValueError as exc:
        log.debug("MACs not counted: %s", exc)
        return None


def prune_channels(
    model: keras.Model,
    fraction: float,
    importance: Importance = "l1",
    skip: Sequence[str] = (),
    round_to: int = 8,
) -> StructuredResult:
    """Remove ``fraction`` of the output channels of every prunable group; return the new model.

    Channels are ranked by ``importance``: the L1 or L2 norm of each filter, or ``bn``, the
    absolute BatchNorm scale right after the layer (Network Slimming). ``skip`` names layers (or
    shell globs) whose width must not change. The original model is not modified. ConfigError if
    ``fraction`` is not in [0, 1), or if no group can be pruned (the message lists every Conv/Dense
    layer and why), so a caller can fall back to unstructured pruning.
    """
    try:
        fraction = float(fraction)
    except (TypeError, ValueError):
        raise ConfigError(f"Structured pruning fraction must be a number in [0, 1), got {fraction!r}.") from None
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"Structured pruning fraction must be in [0, 1) (the share of channels removed per layer), got {fraction}.")
    if importance not in IMPORTANCES:
        raise ConfigError(f"Structured pruning importance must be one of {', '.join(IMPORTANCES)}, got {importance!r}.")
    if int(round_to) < 1:
        raise ConfigError(f"Structured pruning round_to must be at least 1, got {round_to}.")
    graph = _graph(model)
    sources, skipped = _sources(graph, skip)
    tied_groups, tied_skipped = _tie_sources(graph, sources, skipped)
    skipped = sorted([*skipped, *tied_skipped], key=lambda item: graph.position.get(item[0], len(graph.position)))
    if not tied_groups:
        listed = "; ".join(f"'{layer}' {reason}" for layer, reason in skipped) or "the model has no Conv or Dense layer"
        raise ConfigError(f"Model '{model.name}' has no channel group that structured pruning can narrow: {listed}.")
    groups, keep, widths = [], {}, {}
    for members in tied_groups:
        ranked = [_scores(graph, name, importance) for name in members]
        # Each member counts equally: a wide-valued kernel must not decide for the whole group.
        scores = sum(s / s.sum() if s.sum() > 0 else s for s, _ in ranked) if len(members) > 1 else ranked[0][0]
        channels = len(scores)
        count = kept_channels(channels, fraction, int(round_to))
        indices = _select(scores, count)
        total = float(scores.sum())
        share = float(scores[indices].sum()) / total if total > 0 else 1.0
        for name, (_, used) in zip(members, ranked):
            groups.append(ChannelGroup(name, channels, count, used, share, [m for m in members if m != name]))
            widths[name] = count
            if count < channels:
                keep[name] = indices
    groups.sort(key=lambda g: graph.position.get(g.layer, len(graph.position)))
    new = _rebuild(model, graph, widths, _propagate(graph, keep))
    result = StructuredResult(
        model=new,
        groups=groups,
        skipped=skipped,
        parameters_before=count_parameters(model),
        parameters_after=count_parameters(new),
        macs_before=_macs(model),
        macs_after=_macs(new),
        fraction=fraction,
        importance=importance,
    )
    if not keep and fraction > 0:
        result.notes.append(f"every group is too narrow to lose {fraction:.0%} of its channels with round_to={round_to}; nothing removed")
        log.warning("structured pruning removed nothing from '%s': %s", model.name, result.notes[-1])
    log.info(
        "structured pruning of '%s': %d layers narrowed in %d groups, %d layers skipped, parameters %d -> %d",
        model.name, len(keep), len(tied_groups), len(skipped), result.parameters_before, result.parameters_after,
    )
    return result

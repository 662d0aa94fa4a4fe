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

The graph analysis (which sources may narrow, which are tied, and why the others may not) is in
:mod:`pipeline.compress.channel_graph`; this module ranks the channels, slices the weights and
rebuilds. The narrower model is rebuilt from the original's config and gets the sliced weights, so
with ``fraction=0`` it computes exactly what the original did.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence

import keras
import numpy as np

from pipeline.compress.channel_graph import (
    DEPTHWISE_TYPES,
    ChannelGraph,
    channel_graph,
    is_conv_or_dense,
    layer_kind,
    prunable_sources,
    tie_sources,
)
from pipeline.errors import ConfigError
from pipeline.models.cost import count_macs, count_parameters

log = logging.getLogger(__name__)

Importance = Literal["l1", "l2", "bn"]
IMPORTANCES: tuple[str, ...] = ("l1", "l2", "bn")


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


def _following_batchnorm(graph: ChannelGraph, source: str) -> Optional[keras.layers.Layer]:
    consumers = graph.consumers.get(source, [])
    if len(consumers) == 1 and isinstance(graph.layers[consumers[0]], keras.layers.BatchNormalization):
        return graph.layers[consumers[0]]
    return None


def _scores(graph: ChannelGraph, source: str, importance: str) -> tuple[np.ndarray, str]:
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


def _propagate(graph: ChannelGraph, keep: dict[str, np.ndarray]) -> dict[str, Optional[np.ndarray]]:
    """Kept channel indices of every layer's output (None: all of them), in graph order."""
    out: dict[str, Optional[np.ndarray]] = {}
    for name in graph.order:
        layer = graph.layers[name]
        inputs = [out.get(p) for p in graph.producers.get(name, [])]
        kind = layer_kind(layer, graph.ranks.get(name, 0))
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
    if is_conv_or_dense(layer):
        kernel = weights[0]
        if inputs is not None:
            kernel = np.take(kernel, inputs, axis=-2)
        if outputs is not None:
            kernel = np.take(kernel, outputs, axis=-1)
        rest = [w[outputs] if outputs is not None else w for w in weights[1:]]
        return [kernel, *rest]
    if inputs is None:
        return weights
    if isinstance(layer, DEPTHWISE_TYPES):
        return [np.take(weights[0], inputs, axis=-2), *(w[inputs] for w in weights[1:])]
    return [w[inputs] for w in weights]  # BatchNormalization: gamma, beta, mean, variance


def _rebuild(model: keras.Model, graph: ChannelGraph, widths: dict[str, int], kept: dict[str, Optional[np.ndarray]]) -> keras.Model:
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
    new_layers = channel_graph(new).layers
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
    graph = channel_graph(model)
    sources, skipped = prunable_sources(graph, skip)
    tied_groups, tied_skipped = tie_sources(graph, sources, skipped)
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

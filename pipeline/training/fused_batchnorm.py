"""Train BatchNormalization through TensorFlow's fused kernel, without changing the saved model.

Keras 3 computes BatchNormalization from generic ops (moments, then normalise), forward and
backward, one pass over the tensor per op. On a CPU that was most of a student's training step:
profiling the default student put about two thirds of it in BatchNormalization (docs/RESULTS.md,
"Where a training step goes"). TensorFlow's ``FusedBatchNormV3`` does the same maths in one kernel
each way.

:func:`fused_batchnorm` swaps each eligible layer's training path for the fused kernel while a
model trains and restores it afterwards, so the model that is saved, pruned and converted is
plain Keras. The layer keeps Keras' semantics: the moving statistics use the biased batch variance
and the same momentum. Inference (``training=False``) is untouched.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import keras

log = logging.getLogger(__name__)


def _eligible(layer: keras.layers.Layer) -> bool:
    """Only what the fused kernel computes exactly: float32 NHWC, last axis, no renorm or sync."""
    if not isinstance(layer, keras.layers.BatchNormalization):
        return False
    try:  # the symbolic input of a layer in a functional or Sequential graph (public API)
        rank = len(layer.input.shape)
    except (AttributeError, ValueError):  # not called on a symbolic tensor: its rank is unknown
        return False
    axis = layer.axis if isinstance(layer.axis, int) else None
    return (
        rank == 4
        and axis in (-1, 3)
        and layer.center
        and layer.scale
        and not getattr(layer, "renorm", False)
        and not getattr(layer, "synchronized", False)
        and layer.compute_dtype == "float32"
    )


def _fused_call(layer: keras.layers.BatchNormalization, plain_call):
    import tensorflow as tf

    def call(inputs, training=None, mask=None):
        if not training or mask is not None:
            return plain_call(inputs, training=training, mask=mask)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, layer.gamma, layer.beta, epsilon=layer.epsilon, is_training=True
        )
        # The kernel returns the unbiased (Bessel-corrected) variance; Keras keeps the biased one.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), variance.dtype)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        momentum = layer.momentum
        layer.moving_mean.assign(layer.moving_mean * momentum + mean * (1.0 - momentum))
        layer.moving_variance.assign(layer.moving_variance * momentum + variance * (1.0 - momentum))
        return y

    return call


def _walk(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    for child in getattr(layer, "layers", ()):
        yield child
        yield from _walk(child)


@contextlib.contextmanager
def fused_batchnorm(model: keras.Model) -> Iterator[int]:
    """Within the block, ``model``'s BatchNormalization layers train through the fused kernel.

    Yields how many layers were switched (0 on a backend other than TensorFlow). The instance
    attribute that does the switching is removed on exit, even when training fails.
    """
    if keras.backend.backend() != "tensorflow":
        yield 0
        return
    switched = [layer for layer in _walk(model) if _eligible(layer)]
    for layer in switched:
        layer.call = _fused_call(layer, type(layer).call.__get__(layer))
    log.debug("fused BatchNormalization for %d of the layers of %s", len(switched), model.name)
    try:
        yield len(switched)
    finally:
        for layer in switched:
            del layer.call

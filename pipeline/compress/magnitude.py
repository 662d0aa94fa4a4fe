"""Unstructured magnitude pruning for Keras 3 (what TF-MOT's ``prune_low_magnitude`` did for Keras 2).

The smallest-magnitude kernel weights are zeroed, either per layer (every kernel reaches the same
sparsity) or globally (one threshold for all kernels, so layers with many redundant weights give up
more). During fine-tuning :class:`MagnitudePruningCallback` raises sparsity along TF-MOT's
polynomial schedule and re-applies the masks after every optimizer step, so the network can recover
from each increase while pruned weights stay exactly zero. Zeros do not make a .tflite smaller or
faster by themselves; they pay off once the file is compressed or run by a sparse kernel.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Literal, Optional, Sequence

import keras
import numpy as np

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

Scope = Literal["per_layer", "global"]
SCOPES: tuple[str, ...] = ("per_layer", "global")

# Layers whose ``kernel`` is pruned. Biases and BatchNorm are tiny and pruning them buys nothing.
PRUNABLE_TYPES: tuple[type, ...] = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Dense,
)


def check_sparsity(sparsity: float, what: str = "sparsity") -> float:
    """``sparsity`` as a float in [0, 1), else ConfigError: 1 would remove every weight."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ConfigError(f"Pruning {what} must be a number in [0, 1), got {sparsity!r}.") from None
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"Pruning {what} must be in [0, 1) (0 prunes nothing, 1 would remove every weight), got {value}.")
    return value


def polynomial_sparsity(step: int, begin_step: int, end_step: int, initial: float, final: float, power: float = 3.0) -> float:
    """TF-MOT ``PolynomialDecay``: fast pruning early, when the network has most slack, then slower.

    ``s_t = final + (initial - final) * (1 - (t - begin) / (end - begin)) ** power``, held at
    ``initial`` before ``begin_step`` and at ``final`` after ``end_step``.
    """
    if end_step <= begin_step:
        raise ConfigError(f"Pruning end_step ({end_step}) must come after begin_step ({begin_step}).")
    if step <= begin_step:
        return float(initial)
    if step >= end_step:
        return float(final)
    remaining = 1.0 - (step - begin_step) / (end_step - begin_step)
    return float(final + (initial - final) * remaining**power)


def _flat_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers in topological order, nested models expanded (their own layers are what gets pruned)."""
    out: list[keras.layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_flat_layers(layer))
        else:
            out.append(layer)
    return out


def _kernel(layer: keras.layers.Layer) -> Optional[keras.Variable]:
    kernel = getattr(layer, "kernel", None)
    # A LoRA-enabled Dense returns a computed tensor here; there is no single variable to mask.
    return kernel if isinstance(kernel, keras.Variable) else None


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether a layer name is listed in ``patterns`` (exact names or shell globs like ``block1_*``)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def prunable_weights(
    model: keras.Model,
    include_classifier: bool = False,
    min_params: int = 0,
    skip: Sequence[str] = (),
) -> dict[str, keras.Variable]:
    """Layer name -> kernel variable of every Conv/DepthwiseConv/Dense layer to prune, in graph order.

    The final classifier (the last such layer, whose outputs are the logits) is left alone unless
    ``include_classifier``: it is small and every weight in it matters. Kernels with fewer than
    ``min_params`` weights and layers named in ``skip`` are left alone too.
    """
    candidates = [layer for layer in _flat_layers(model) if isinstance(layer, PRUNABLE_TYPES) and _kernel(layer) is not None]
    if candidates and not include_classifier:
        candidates = candidates[:-1]
    kernels: dict[str, keras.Variable] = {}
    for layer in candidates:
        kernel = _kernel(layer)
        if matches(layer.name, skip) or int(np.prod(kernel.shape)) < min_params:
            continue
        if layer.name in kernels:
            raise ConfigError(f"Model '{model.name}' has two layers named '{layer.name}'; pruning needs unique layer names.")
        kernels[layer.name] = kernel
    return kernels


def _smallest(magnitudes: np.ndarray, count: int) -> np.ndarray:
    """Flat indices of the ``count`` smallest values (exact count, ties broken by position)."""
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    return np.argpartition(magnitudes, count - 1)[:count]


def compute_masks(
    model: keras.Model,
    sparsity: float,
    scope: Scope = "per_layer",
    include_classifier: bool = False,
    min_params: int = 0,
    skip: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Layer name -> boolean keep-mask (kernel shaped) zeroing ``sparsity`` of the smallest weights.

    ``per_layer`` prunes each kernel to exactly ``sparsity``; ``global`` ranks all prunable weights
    together so the total reaches ``sparsity``. Already-zero weights rank lowest, so raising the
    sparsity only ever adds to what was pruned before.
    """
    sparsity = check_sparsity(sparsity)
    if scope not in SCOPES:
        raise ConfigError(f"Pruning scope must be one of {', '.join(SCOPES)}, got {scope!r}.")
    kernels = prunable_weights(model, include_classifier, min_params, skip)
    if not kernels:
        raise ConfigError(f"Model '{model.name}' has no Conv/Dense kernel left to prune (min_params={min_params}, skip={list(skip)}).")
    values = {name: np.abs(keras.ops.convert_to_numpy(kernel)) for name, kernel in kernels.items()}
    masks: dict[str, np.ndarray] = {}
    if scope == "per_layer":
        for name, magnitude in values.items():
            flat = np.ones(magnitude.size, dtype=bool)
            flat[_smallest(magnitude.ravel(), int(round(sparsity * magnitude.size)))] = False
            masks[name] = flat.reshape(magnitude.shape)
        return masks
    everything = np.concatenate([m.ravel() for m in values.values()])
    flat = np.ones(everything.size, dtype=bool)
    flat[_smallest(everything, int(round(sparsity * everything.size)))] = False
    offset = 0
    for name, magnitude in values.items():
        masks[name] = flat[offset : offset + magnitude.size].reshape(magnitude.shape)
        offset += magnitude.size
    return masks


def _layers_by_name(model: keras.Model) -> dict[str, keras.layers.Layer]:
    return {layer.name: layer for layer in _flat_layers(model)}


def apply_masks(model: keras.Model, masks: dict[str, np.ndarray]) -> None:
    """Zero the masked-out kernel weights in place (``kernel *= mask``)."""
    layers = _layers_by_name(model)
    for name, mask in masks.items():
        layer = layers.get(name)
        kernel = _kernel(layer) if layer is not None else None
        if kernel is None:
            raise ValueError(f"mask for '{name}', but model '{model.name}' has no prunable layer of that name")
        if tuple(kernel.shape) != tuple(mask.shape):
            raise ValueError(f"mask for '{name}' has shape {mask.shape}, kernel has {tuple(kernel.shape)}")
        kernel.assign(keras.ops.multiply(kernel.value, keras.ops.cast(mask, kernel.dtype)))


def prune_to(
    model: keras.Model,
    sparsity: float,
    scope: Scope = "per_layer",
    include_classifier: bool = False,
    min_params: int = 0,
    skip: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """One-shot pruning without training: compute masks at ``sparsity``, apply them, return them."""
    masks = compute_masks(model, sparsity, scope, include_classifier, min_params, skip)
    apply_masks(model, masks)
    return masks


class MagnitudePruningCallback(keras.callbacks.Callback):
    """Gradual magnitude pruning during ``fit`` (pass it to ``train_classifier(callbacks=...)``).

    Every ``frequency`` steps between ``begin_step`` and ``end_step`` the target sparsity follows
    :func:`polynomial_sparsity` and the masks are recomputed from the current weights; after every
    training batch the masks are re-applied, because the optimizer keeps updating pruned weights.
    ``end_step=None`` ends the ramp after ``END_FRACTION`` of the fit's steps, leaving the rest to
    recover. Training ends with the masks at ``final_sparsity`` applied, whatever the step count.
    Steps are counted by this callback, so it assumes ``steps_per_execution=1`` (Keras' default).
    """

    END_FRACTION = 0.75

    def __init__(
        self,
        final_sparsity: float,
        scope: Scope = "per_layer",
        initial_sparsity: float = 0.0,
        begin_step: int = 0,
        end_step: Optional[int] = None,
        frequency: int = 10,
        power: float = 3.0,
        include_classifier: bool = False,
        min_params: int = 0,
        skip: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.final_sparsity = check_sparsity(final_sparsity, "final sparsity")
        self.initial_sparsity = check_sparsity(initial_sparsity, "initial sparsity")
        if self.initial_sparsity > self.final_sparsity:
            raise ConfigError(f"Pruning initial sparsity {initial_sparsity} is above the final sparsity {final_sparsity}.")
        if scope not in SCOPES:
            raise ConfigError(f"Pruning scope must be one of {', '.join(SCOPES)}, got {scope!r}.")
        if frequency < 1 or begin_step < 0 or (end_step is not None and end_step <= begin_step):
            raise ConfigError(f"Pruning needs frequency >= 1 and 0 <= begin_step < end_step, got {frequency}, {begin_step}, {end_step}.")
        if power <= 0:
            raise ConfigError(f"Pruning schedule power must be positive, got {power}.")
        self.scope, self.begin_step, self.end_step, self.frequency, self.power = scope, begin_step, end_step, frequency, power
        self.options = {"include_classifier": include_classifier, "min_params": min_params, "skip": tuple(skip)}
        self.step = 0
        self.sparsity = self.initial_sparsity
        self.masks: dict[str, np.ndarray] = {}
        self.history: list[tuple[int, float]] = []  # (step, sparsity) at each mask update
        self._end = end_step

    def on_train_begin(self, logs=None) -> None:
        self.step = 0
        if self.end_step is None:
            total = int((self.params or {}).get("epochs") or 1) * int((self.params or {}).get("steps") or 1)
            self._end = max(self.begin_step + 1, int(total * self.END_FRACTION))
        log.debug("magnitude pruning %s -> %s over steps %d..%d", self.initial_sparsity, self.final_sparsity, self.begin_step, self._end)
        self._update(self.initial_sparsity)

    def _update(self, sparsity: float) -> None:
        self.sparsity = sparsity
        self.masks = compute_masks(self.model, sparsity, self.scope, **self.options)
        self._tensors = {name: keras.ops.convert_to_tensor(mask.astype("float32")) for name, mask in self.masks.items()}
        self._variables = prunable_weights(self.model, **self.options)
        self.history.append((self.step, sparsity))
        self._apply()

    def _apply(self) -> None:
        for name, mask in self._tensors.items():
            kernel = self._variables[name]
            kernel.assign(keras.ops.multiply(kernel.value, keras.ops.cast(mask, kernel.dtype)))

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.step += 1
        due = self.begin_step <= self.step <= self._end and (self.step - self.begin_step) % self.frequency == 0
        if due:
            target = polynomial_sparsity(self.step, self.begin_step, self._end, self.initial_sparsity, self.final_sparsity, self.power)
            if target > self.sparsity:
                self._update(target)
                return
        self._apply()

    def on_train_end(self, logs=None) -> None:
        self._update(self.final_sparsity)
        log.info("magnitude pruning finished at sparsity %.3f (%s, %d kernels)", self.final_sparsity, self.scope, len(self.masks))

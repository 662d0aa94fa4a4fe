"""Magnitude pruning: the schedule, masks at the requested sparsity, and masks kept through fine-tuning."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.compress.magnitude import (
    MagnitudePruningCallback,
    apply_masks,
    compute_masks,
    polynomial_sparsity,
    prunable_weights,
    prune_to,
)
from pipeline.compress.sparsity_report import layer_sparsity, overall_sparsity
from pipeline.errors import ConfigError


def tiny_model(seed: int = 0) -> keras.Model:
    """Conv -> BN -> ReLU -> depthwise -> conv -> GAP -> Dense -> Dense(logits): every prunable type."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(16, 1, name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny")


# ------------------------------------------------------------------ schedule


@pytest.mark.parametrize(
    "step, expected",
    [(-5, 0.1), (0, 0.1), (50, 0.8 + (0.1 - 0.8) * 0.5**3), (75, 0.8 + (0.1 - 0.8) * 0.25**3), (100, 0.8), (250, 0.8)],
)
def test_polynomial_schedule_known_points(step: int, expected: float) -> None:
    assert polynomial_sparsity(step, 0, 100, 0.1, 0.8) == pytest.approx(expected)


def test_polynomial_schedule_power_one_is_linear_and_respects_begin() -> None:
    assert polynomial_sparsity(35, 10, 110, 0.0, 0.5, power=1.0) == pytest.approx(0.125)
    assert polynomial_sparsity(5, 10, 110, 0.0, 0.5, power=1.0) == 0.0
    with pytest.raises(ConfigError, match="end_step"):
        polynomial_sparsity(5, 10, 10, 0.0, 0.5)


# ------------------------------------------------------------------ which kernels


def test_prunable_weights_selects_kernels_and_honours_options() -> None:
    model = tiny_model()
    assert list(prunable_weights(model)) == ["conv1", "dw", "pw", "fc"]  # classifier left alone by default
    assert list(prunable_weights(model, include_classifier=True))[-1] == "logits"
    assert list(prunable_weights(model, min_params=100)) == ["pw", "fc"]  # conv1 has 72, dw 72 weights
    assert list(prunable_weights(model, skip=["conv*", "fc"])) == ["dw", "pw"]  # exact names or globs
    assert all(tuple(v.shape) == tuple(model.get_layer(n).kernel.shape) for n, v in prunable_weights(model).items())


# ------------------------------------------------------------------ masks


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_per_layer_masks_hit_sparsity_in_every_layer(sparsity: float) -> None:
    model = tiny_model()
    masks = compute_masks(model, sparsity, "per_layer")
    assert set(masks) == {"conv1", "dw", "pw", "fc"}
    for name, mask in masks.items():
        kernel = np.abs(model.get_layer(name).kernel.numpy())
        assert mask.shape == kernel.shape and mask.dtype == bool
        assert (~mask).sum() == round(sparsity * mask.size)
        if 0 < sparsity:
            assert kernel[~mask].max() <= kernel[mask].min()  # the smallest ones went


def test_global_masks_hit_total_sparsity_with_one_threshold() -> None:
    model = tiny_model()
    fc = model.get_layer("fc")
    fc.kernel.assign(fc.kernel.numpy() * 0.01)  # one layer of tiny weights: a global threshold takes most of it
    masks = compute_masks(model, 0.5, "global")
    pruned = sum(int((~m).sum()) for m in masks.values())
    total = sum(m.size for m in masks.values())
    assert pruned == round(0.5 * total)
    magnitudes = {n: np.abs(model.get_layer(n).kernel.numpy()) for n in masks}
    largest_pruned = max(magnitudes[n][~m].max() for n, m in masks.items() if (~m).any())
    smallest_kept = min(magnitudes[n][m].min() for n, m in masks.items() if m.any())
    assert largest_pruned <= smallest_kept
    assert (~masks["fc"]).sum() >= 0.95 * pruned  # nearly everything pruned comes from the tiny layer
    assert (~masks["pw"]).mean() < 0.1


def test_prune_to_zeroes_weights_and_report_counts_them() -> None:
    model = tiny_model()
    masks = prune_to(model, 0.6)
    rows = {row["layer"]: row for row in layer_sparsity(model)}
    assert set(rows) == {"conv1", "dw", "pw", "fc", "logits"}  # the report covers the classifier too
    for name, mask in masks.items():
        assert np.all(model.get_layer(name).kernel.numpy()[~mask] == 0)
        assert rows[name]["zeros"] == (~mask).sum() and rows[name]["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert rows["logits"]["zeros"] == 0
    pruned = sum(r["zeros"] for r in rows.values())
    assert overall_sparsity(model) == pytest.approx(pruned / sum(r["parameters"] for r in rows.values()))


def test_raising_sparsity_keeps_earlier_pruned_weights_pruned() -> None:
    model = tiny_model()
    low = prune_to(model, 0.3, "global")
    high = compute_masks(model, 0.7, "global")
    for name in low:
        assert not np.any(high[name] & ~low[name])


def test_apply_masks_rejects_unknown_layer_and_wrong_shape() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="nope"):
        apply_masks(model, {"nope": np.ones((1,), bool)})
    with pytest.raises(ValueError, match="shape"):
        apply_masks(model, {"fc": np.ones((3, 3), bool)})


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, "half", None])
def test_bad_sparsity_raises_config_error(bad) -> None:
    model = tiny_model()
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        compute_masks(model, bad)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        MagnitudePruningCallback(bad)


def test_bad_scope_and_schedule_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="scope"):
        compute_masks(tiny_model(), 0.5, "per_model")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="initial sparsity"):
        MagnitudePruningCallback(0.3, initial_sparsity=0.5)
    with pytest.raises(ConfigError, match="frequency"):
        MagnitudePruningCallback(0.5, frequency=0)
    with pytest.raises(ConfigError, match="begin_step"):
        MagnitudePruningCallback(0.5, begin_step=10, end_step=5)


# ------------------------------------------------------------------ fine-tuning


class ZeroWatcher(keras.callbacks.Callback):
    """Runs after the pruning callback and records, after every batch, any pruned weight that is not zero."""

    def __init__(self, pruning: MagnitudePruningCallback) -> None:
        super().__init__()
        self.pruning, self.batches, self.leaks = pruning, 0, []

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.batches += 1
        for name, mask in self.pruning.masks.items():
            kernel = self.model.get_layer(name).kernel.numpy()
            if np.any(kernel[~mask] != 0):
                self.leaks.append((self.batches, name))


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["per_layer", "global"])
def test_callback_keeps_pruned_weights_zero_through_fine_tuning(scope: str) -> None:
    from pipeline.config.profile import TrainingConfig
    from pipeline.training.fit import train_classifier

    model = tiny_model(seed=1)
    before = {name: model.get_layer(name).kernel.numpy().copy() for name in ("conv1", "pw", "fc")}
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (256, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 256)
    pruning = MagnitudePruningCallback(0.7, scope=scope, frequency=2)  # 8 steps; ramp ends at step 6
    watcher = ZeroWatcher(pruning)
    config = TrainingConfig(epochs=1, batch_size=32, augment=False)
    train_classifier(model, x, y, 10, config, seed=0, label="prune", callbacks=[pruning, watcher])

    assert watcher.batches == 8 and watcher.leaks == []
    sparsities = [s for _, s in pruning.history]
    assert sparsities == sorted(sparsities) and len(set(sparsities)) >= 3  # raised gradually, never lowered
    assert pruning.sparsity == 0.7
    rows = {row["layer"]: row for row in layer_sparsity(model)}
    pruned = [rows[name] for name in pruning.masks]
    assert sum(r["zeros"] for r in pruned) / sum(r["parameters"] for r in pruned) == pytest.approx(0.7, abs=0.005)
    if scope == "per_layer":
        assert all(r["sparsity"] == pytest.approx(0.7, abs=0.01) for r in pruned)
    for name, mask in pruning.masks.items():
        assert np.all(model.get_layer(name).kernel.numpy()[~mask] == 0)
    kept_changed = [not np.allclose(model.get_layer(n).kernel.numpy()[pruning.masks[n]], before[n][pruning.masks[n]]) for n in before]
    assert all(kept_changed)  # the surviving weights were really fine-tuned

"""Fused BatchNormalization while training: Keras' maths, a faster kernel, a plain saved model."""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.training.fused_batchnorm import fused_batchnorm


def bn_model(dtype: str = "float32", channels: int = 6) -> keras.Model:
    inputs = keras.Input((5, 5, channels), dtype=dtype)
    return keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, dtype=dtype, name="bn")(inputs))


def train_step(model: keras.Model, x: np.ndarray, weights: np.ndarray, fused: bool):
    xv = tf.constant(x)
    with fused_batchnorm(model) if fused else contextlib.nullcontext():
        with tf.GradientTape() as tape:
            tape.watch(xv)
            loss = tf.reduce_sum(model(xv, training=True) * weights)
        grads = tape.gradient(loss, [xv, *model.trainable_variables])
    return [g.numpy().astype(np.float64) for g in grads], [v.numpy().astype(np.float64) for v in model.non_trainable_weights]


@pytest.mark.parametrize("loc,scale", [(0.0, 1.0), (3.0, 0.1)])
def test_fused_training_step_matches_keras_in_float64(loc: float, scale: float) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(loc, scale, (32, 5, 5, 6))
    w = rng.normal(size=(32, 5, 5, 6))
    reference = bn_model("float64")
    fused = bn_model("float32")
    fused.set_weights([v.astype(np.float32) for v in reference.get_weights()])
    ref_grads, ref_stats = train_step(reference, x, w, fused=False)
    grads, stats = train_step(fused, x.astype(np.float32), w.astype(np.float32), fused=True)
    for got, want in zip(grads, ref_grads):
        assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want) + 1e-6
    for got, want in zip(stats, ref_stats):  # moving mean and the biased moving variance, momentum 0.9
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_switch_is_undone_after_the_block_even_when_training_fails() -> None:
    model = bn_model()
    layer = model.get_layer("bn")
    with pytest.raises(RuntimeError, match="boom"):
        with fused_batchnorm(model) as switched:
            assert switched == 1 and "call" in vars(layer)
            raise RuntimeError("boom")
    assert "call" not in vars(layer)


def test_inference_is_untouched_and_ineligible_layers_are_left_alone() -> None:
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.BatchNormalization(name="bn4d")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.BatchNormalization(name="bn2d")(x)  # not NHWC: the fused kernel does not apply
    model = keras.Model(inputs, x)
    x = np.random.default_rng(1).random((8, 4, 4, 3), dtype=np.float32)
    before = model(x, training=False).numpy()
    with fused_batchnorm(model) as switched:
        assert switched == 1
        assert "call" not in vars(model.get_layer("bn2d"))
        np.testing.assert_array_equal(model(x, training=False).numpy(), before)


def test_layers_inside_nested_models_are_switched() -> None:
    inner = bn_model()
    inputs = keras.Input((5, 5, 6))
    outer = keras.Model(inputs, inner(inputs))
    with fused_batchnorm(outer) as switched:
        assert switched == 1


@pytest.mark.slow
def test_a_student_trained_with_fused_batchnorm_saves_as_plain_keras(tmp_path) -> None:
    from pipeline.config.profile import TrainingConfig
    from pipeline.models.registry import build_student
    from pipeline.training.fit import train_classifier

    rng = np.random.default_rng(3)
    x = rng.random((256, 28, 28, 1), dtype=np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(int)
    model = build_student("mobilenet_v1", (28, 28, 1), 2, 0.25)
    train_classifier(model, x, y, 2, TrainingConfig(epochs=1, batch_size=64), seed=0, label="student")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    bns = [layer for layer in loaded.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(type(layer) is keras.layers.BatchNormalization for layer in bns)
    assert not any("call" in vars(layer) for layer in model.layers)
    moved = [float(np.abs(layer.moving_variance.numpy() - 1).max()) for layer in bns]
    assert max(moved) > 1e-3  # the fused path updated the moving statistics that get saved
    np.testing.assert_allclose(loaded.predict(x[:16], verbose=0), model.predict(x[:16], verbose=0), rtol=1e-5, atol=1e-5)


def test_a_layer_never_called_on_a_symbolic_input_is_left_alone() -> None:
    """Its input rank is unknown (a subclassed model's layer), so the plain Keras path stays."""

    class Subclassed(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.bn = keras.layers.BatchNormalization()

        def call(self, x, training=None):
            return self.bn(x, training=training)

    model = Subclassed()
    model(np.zeros((2, 4, 4, 3), np.float32))
    with fused_batchnorm(model) as switched:
        assert switched == 0

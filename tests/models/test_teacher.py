"""The ResNet teacher and loading a user's Keras file as teacher."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.config.profile import TeacherConfig
from pipeline.errors import ConfigError
from pipeline.models.cost import count_macs, count_parameters
from pipeline.models.teacher import build_resnet_teacher, build_teacher, load_keras_teacher, strip_softmax


def test_default_teacher_size_and_logits() -> None:
    model = build_resnet_teacher((28, 28, 1), 10)
    params = count_parameters(model)
    assert 500_000 <= params <= 1_500_000, params
    assert model.output_shape == (None, 10)
    assert model.layers[-1].activation is keras.activations.linear
    gap_input = model.get_layer("gap").input.shape
    assert tuple(gap_input[1:]) == (4, 4, 128)  # stride-2 stem, stages at 14 -> 7 -> 4, widths 32/64/128
    x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype("float32")
    assert model(x).shape == (2, 10)
    assert 15e6 < count_macs(model) < 30e6


def test_full_resolution_teacher_on_request() -> None:
    model = build_resnet_teacher((28, 28, 1), 10, stem_stride=1)
    assert tuple(model.get_layer("gap").input.shape[1:]) == (7, 7, 128)
    assert count_parameters(model) == count_parameters(build_resnet_teacher((28, 28, 1), 10))
    assert count_macs(model) > 3 * count_macs(build_resnet_teacher((28, 28, 1), 10))


def test_teacher_follows_config() -> None:
    small = build_teacher(TeacherConfig(base_width=8, blocks_per_stage=(1, 1)), (16, 16, 3), 4)
    assert small.output_shape == (None, 4)
    assert tuple(small.get_layer("gap").input.shape[1:]) == (4, 4, 16)  # 16 -> 8 (stem) -> 4
    tiny = build_resnet_teacher((12, 12, 1), 3, base_width=8, blocks_per_stage=(1, 1))
    assert tuple(tiny.get_layer("gap").input.shape[1:]) == (6, 6, 16)  # under 16 px: stride-1 stem
    assert small.name == "resnet_w8_b1-1"


def _save(model: keras.Model, path: Path) -> Path:
    model.save(path)
    return path


def _tiny(activation=None, softmax_layer: bool = False, shape=(12, 12, 1), classes: int = 3) -> keras.Model:
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(classes, activation=activation, name="head")(x)
    if softmax_layer:
        x = keras.layers.Softmax()(x)
    return keras.Model(inputs, x)


def test_load_logits_model_unchanged(tmp_path: Path) -> None:
    model = _tiny()
    path = _save(model, tmp_path / "t.keras")
    loaded = load_keras_teacher(path, (12, 12, 1), 3)
    x = np.random.default_rng(1).uniform(size=(3, 12, 12, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("softmax_layer", [False, True], ids=["dense-activation", "softmax-layer"])
def test_final_softmax_is_removed_exactly(tmp_path: Path, softmax_layer: bool) -> None:
    model = _tiny(activation=None if softmax_layer else "softmax", softmax_layer=softmax_layer)
    logits_model = keras.Model(model.inputs[0], model.get_layer("head").output)
    x = np.random.default_rng(2).uniform(size=(3, 12, 12, 1)).astype("float32")
    if not softmax_layer:
        # A Dense(activation=softmax) has no separate logits tensor: compute them from its weights.
        features = keras.Model(model.inputs[0], model.get_layer("head").input)(x)
        kernel, bias = model.get_layer("head").get_weights()
        expected = np.asarray(features) @ kernel + bias
    else:
        expected = np.asarray(logits_model(x))
    loaded = load_keras_teacher(_save(model, tmp_path / "soft.keras"), (12, 12, 1), 3)
    out = np.asarray(loaded(x))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(out.sum(axis=1), 1.0)


def test_strip_softmax_reports_whether_it_changed_anything() -> None:
    assert strip_softmax(_tiny())[1] is False
    assert strip_softmax(_tiny(activation="softmax"))[1] is True


def test_hidden_softmax_is_refused(tmp_path: Path) -> None:
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(3, activation="softmax")(x)
    x = keras.layers.Reshape((3,))(x)  # the softmax is no longer the final layer
    path = _save(keras.Model(inputs, x), tmp_path / "hidden.keras")
    with pytest.raises(ConfigError, match="outputs probabilities"):
        load_keras_teacher(path, (12, 12, 1), 3)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"teacher.keras \(teacher.path\) does not exist"):
        load_keras_teacher(tmp_path / "teacher.keras", (28, 28, 1), 10)


def test_not_a_keras_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.keras"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(ConfigError) as info:
        load_keras_teacher(path, (28, 28, 1), 10)
    assert str(path) in str(info.value) and "cannot be loaded as a Keras model" in str(info.value)
    assert "\n" not in str(info.value)


def test_wrong_suffix_or_directory(tmp_path: Path) -> None:
    (tmp_path / "saved_model").mkdir()
    with pytest.raises(ConfigError, match="SavedModel"):
        load_keras_teacher(tmp_path / "saved_model", (28, 28, 1), 10)


def test_input_shape_mismatch_names_both_shapes(tmp_path: Path) -> None:
    path = _save(_tiny(shape=(12, 12, 1)), tmp_path / "t.keras")
    with pytest.raises(ConfigError) as info:
        load_keras_teacher(path, (28, 28, 1), 3)
    message = str(info.value)
    assert str(path) in message and "(12, 12, 1)" in message and "(28, 28, 1)" in message


def test_flexible_input_size_is_accepted(tmp_path: Path) -> None:
    path = _save(_tiny(shape=(None, None, 1)), tmp_path / "any.keras")
    assert load_keras_teacher(path, (20, 24, 1), 3)(np.zeros((1, 20, 24, 1), "float32")).shape == (1, 3)


def test_class_count_mismatch(tmp_path: Path) -> None:
    path = _save(_tiny(classes=3), tmp_path / "t.keras")
    with pytest.raises(ConfigError, match=r"outputs shape \(3\), but the dataset has 10 classes"):
        load_keras_teacher(path, (12, 12, 1), 10)

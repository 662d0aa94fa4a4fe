"""The teacher: a ResNet built here, or a user's own Keras model file.

Distillation needs the teacher's LOGITS, so the built ResNet ends in a linear Dense layer, and a
loaded model that ends in softmax has the softmax removed (see :func:`load_keras_teacher`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import keras
from keras import layers

from pipeline.errors import ConfigError
from pipeline.models.common import BN, check_input

TEACHER_STRIDE2_MIN_SIDE = 16


def _basic_block(x, filters: int, stride: int, name: str):
    """Classic (post-activation) ResNet basic block: two 3x3 convs with BN; 1x1 projection shortcut
    when the shape changes."""
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(**BN, name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(**BN, name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(**BN, name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def build_resnet_teacher(
    input_shape: Sequence[int],
    num_classes: int,
    base_width: int = 32,
    blocks_per_stage: Sequence[int] = (2, 2, 2),
    stem_stride: Optional[int] = None,
) -> keras.Model:
    """ResNet with basic blocks; stage ``i`` has ``base_width * 2**i`` channels and, from the second
    stage on, starts with a stride-2 block. Global average pooling, then a Dense layer of logits.

    The stem is a stride-2 3x3 conv (stride 1 only for inputs under 16 px), so on 28x28 the stages
    run at 14, 7 and 4 px. A stride-1 stem (stages at 28/14/7, 3.6x the MACs) trains several times
    slower (docs/RESULTS.md); epoch time is what limits this pipeline, so pass ``stem_stride=1``
    only on purpose.
    """
    shape = check_input(input_shape, num_classes)
    if base_width <= 0 or not blocks_per_stage or min(blocks_per_stage) <= 0:
        raise ValueError(f"base_width and blocks_per_stage must be positive, got {base_width}, {tuple(blocks_per_stage)}")
    inputs = keras.Input(shape, name="image")
    stride = stem_stride if stem_stride is not None else (2 if min(shape[:2]) >= TEACHER_STRIDE2_MIN_SIDE else 1)
    x = layers.Conv2D(base_width, 3, strides=stride, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(**BN, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, blocks in enumerate(blocks_per_stage):
        filters = base_width * 2**stage
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 0 else 1
            x = _basic_block(x, filters, stride, f"stage{stage + 1}_block{block + 1}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    stages = "-".join(str(b) for b in blocks_per_stage)
    return keras.Model(inputs, outputs, name=f"resnet_w{base_width}_b{stages}")


TEACHER_SUFFIXES = (".keras", ".h5", ".hdf5")


def _fmt(shape: Sequence) -> str:
    return "(" + ", ".join("None" if d is None else str(int(d)) for d in shape) + ")"


def _is_softmax(function) -> bool:
    return function is keras.activations.softmax or getattr(function, "__name__", "") == "softmax"


def _output_layer(model: keras.Model):
    """The layer that produces the model's (single) output."""
    history = getattr(model.outputs[0], "_keras_history", None)
    return history[0] if history is not None else model.layers[-1]


def strip_softmax(model: keras.Model) -> tuple[keras.Model, bool]:
    """Return a model that outputs logits, and whether a final softmax was removed.

    Two structural cases are recognised: a final layer with ``activation="softmax"`` (Dense, Conv,
    Activation), whose activation is switched to linear in place (same weights, so its output is the
    pre-softmax logits exactly); and a final ``keras.layers.Softmax`` layer, which is cut off by
    building a model up to its input. A softmax hidden elsewhere (inside a custom layer, followed by
    a reshape) cannot be seen here; :func:`load_keras_teacher` then refuses the model because its
    outputs sum to 1.
    """
    last = _output_layer(model)
    if isinstance(last, keras.layers.Softmax):
        history = model.outputs[0]._keras_history
        node = last._inbound_nodes[history[1]]
        return keras.Model(model.inputs[0], node.input_tensors[0], name=model.name), True
    if _is_softmax(getattr(last, "activation", None)):
        last.activation = keras.activations.linear
        return model, True
    return model, False


def load_keras_teacher(path: Path, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """Load the user's teacher (``teacher.path``), check it fits the data, and return a LOGITS model.

    ConfigError (naming the file and the shapes) if the file is missing, is not a Keras model, takes
    a different input than (height, width, channels) of the profile, or does not output
    ``num_classes`` values. A final softmax is removed (see :func:`strip_softmax`); if the outputs
    still look like probabilities the model is refused, because distilling from probabilities as if
    they were logits silently weakens the teacher.
    """
    import numpy as np

    path = Path(path)
    expected_in = tuple(int(v) for v in input_shape)
    if not path.exists():
        raise ConfigError(f"Teacher model file {path} (teacher.path) does not exist.")
    if path.is_dir() or path.suffix.lower() not in TEACHER_SUFFIXES:
        raise ConfigError(
            f"Teacher model {path} (teacher.path) is not a Keras model file: it must be a .keras file (or legacy "
            ".h5). A TensorFlow SavedModel directory cannot be loaded by Keras 3; re-save the model with "
            "model.save('teacher.keras')."
        )
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types (ValueError, zipfile.BadZipFile, OSError, TypeError)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"Teacher model file {path} (teacher.path) cannot be loaded as a Keras model: {reason}.") from None
    if not isinstance(model, keras.Model):
        raise ConfigError(f"Teacher model file {path} holds a {type(model).__name__}, not a Keras model.")
    inputs = getattr(model, "inputs", None) or []
    outputs = getattr(model, "outputs", None) or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConfigError(
            f"Teacher model {path} has {len(inputs)} inputs and {len(outputs)} outputs; a teacher must be a "
            "functional or Sequential model with exactly one image input and one output."
        )
    have_in = tuple(inputs[0].shape[1:])
    fits = len(have_in) == len(expected_in) and all(h is None or int(h) == e for h, e in zip(have_in, expected_in))
    if not fits:
        raise ConfigError(
            f"Teacher model {path} takes inputs of shape {_fmt(have_in)}, but the profile's preprocessing makes "
            f"images of shape {_fmt(expected_in)} (height, width, channels). Use a teacher trained on that size "
            "or change the preprocessing section."
        )
    have_out = tuple(outputs[0].shape[1:])
    if have_out != (num_classes,):
        raise ConfigError(
            f"Teacher model {path} outputs shape {_fmt(have_out)}, but the dataset has {num_classes} classes, so "
            f"the teacher must output ({num_classes}) logits."
        )
    model, _removed = strip_softmax(model)
    probe = np.random.default_rng(0).uniform(0.0, 1.0, size=(4, *expected_in)).astype("float32")
    out = np.asarray(model(probe, training=False))
    if np.all(out >= 0) and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3):
        raise ConfigError(
            f"Teacher model {path} outputs probabilities (non-negative, summing to 1) and its softmax is not a "
            "final softmax activation or Softmax layer that could be removed. Save the model without the final "
            "softmax so that it outputs logits."
        )
    return model


def build_teacher(cfg, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """The teacher a profile's ``teacher`` section asks for (``pipeline.config.profile.TeacherConfig``)."""
    if cfg.kind == "keras-file":
        return load_keras_teacher(Path(str(cfg.path)).expanduser(), input_shape, num_classes)
    return build_resnet_teacher(input_shape, num_classes, base_width=cfg.base_width, blocks_per_stage=cfg.blocks_per_stage)

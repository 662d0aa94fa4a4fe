"""Small real ONNX models for the ONNX tests: built with onnx.helper (fast, no TensorFlow) or exported
from tiny Keras models with tf2onnx, the way a PyTorch user's NCHW model looks."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def conv_classifier(
    path: Path,
    dims: Sequence = ("N", 1, 12, 12),
    classes: int = 3,
    softmax: bool = False,
    custom_op: bool = False,
    seed: int = 0,
) -> Path:
    """NCHW Conv → Relu → GlobalAveragePool → Flatten → Gemm (→ Softmax); ``custom_op`` puts a
    made-up ``com.example`` operator after the Relu."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    channels = dims[1] if isinstance(dims[1], int) else 1
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.5, (4, channels, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.5, (4, classes)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
    ]
    last = "relu"
    if custom_op:
        nodes.append(helper.make_node("FancyOp", ["relu"], ["fancy"], name="fancy", domain="com.example"))
        last = "fancy"
    nodes += [
        helper.make_node("GlobalAveragePool", [last], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc"),
    ]
    output = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1))
        output = "probs"
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", classes])], initializer=weights,
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] if custom_op else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save(model, str(path))
    return Path(path)


def keras_classifier(shape=(12, 12, 1), classes: int = 3, seed: int = 0, flatten: bool = False):
    """A tiny ResNet-ish Keras model (conv, BN, residual add, GAP, dense); ``flatten`` ends in
    Flatten + Dense instead, so every pixel position matters (used to tell layouts apart)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape)
    x = layers.Conv2D(6, 3, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    y = layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.Flatten()(x) if flatten else layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(classes)(x), name="tiny_teacher")
    # Non-trivial BatchNorm statistics so the conversion has something to get wrong.
    bn = model.layers[2]
    bn.moving_mean.assign(np.linspace(-0.2, 0.2, 6).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 1.5, 6).astype("float32"))
    return model


def export_nchw(model, path: Path, opset: int = 17) -> Path:
    """The Keras model as a PyTorch-style ONNX file: input (batch, C, H, W)."""
    from pipeline.onnx.exporter import export_keras

    Path(path).write_bytes(export_keras(model, opset=opset, layout="NCHW"))
    return Path(path)


def write_pattern_idx(directory: Path, train: int = 240, test: int = 90, size: int = 12, classes: int = 3) -> Path:
    """A learnable IDX dataset: the brightest horizontal band is the class."""
    from tests.helpers.idx_files import pattern_images, write_idx_dir

    y_train = (np.arange(train) % classes).astype(np.uint8)
    y_test = (np.arange(test) % classes).astype(np.uint8)
    return write_idx_dir(directory, pattern_images(y_train, size, seed=1), y_train, pattern_images(y_test, size, seed=2), y_test)

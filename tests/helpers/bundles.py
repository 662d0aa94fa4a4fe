"""Make small but real bundles (real Keras model, real TFLite conversion) for tests.

Deploy and agent tests need a genuine bundle without paying for a full pipeline run; this builds
one in a few seconds with the same writer the package stage uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.bundle.writer import tensor_specs, write_bundle

PREPROCESSING = {"height": 12, "width": 12, "channels": 1, "scale": 1.0 / 255.0, "mean": 0.0, "std": 1.0}


def make_tiny_bundle(root: Path, quantization: str = "int8", seed: int = 0, classes: int = 3, count: int = 24) -> Path:
    """A 12x12 grey, ``classes``-way classifier whose class is the brightest image third."""
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(count, 12, 12, 1), dtype=np.uint8)
    labels = np.arange(count) % classes
    for i, label in enumerate(labels):
        images[i, label * 4 : label * 4 + 4] += 150
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.DepthwiseConv2D(3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(classes),
        ]
    )
    from pipeline.data.preprocessing import PreprocessingSpec
    from pipeline.quantize.litert_eval import quantize_input

    x = PreprocessingSpec(**PREPROCESSING).apply(images)
    model.compile(keras.optimizers.Adam(0.02), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, labels, epochs=40, batch_size=8, verbose=0)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[i : i + 1]] for i in range(len(x)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif quantization != "float32":
        raise ValueError(quantization)
    model_bytes = converter.convert()
    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    predictions = []
    for sample in x:
        data = sample[None]
        interpreter.set_tensor(inp["index"], quantize_input(data, inp))
        interpreter.invoke()
        predictions.append(int(np.argmax(interpreter.get_tensor(out["index"])[0])))
    predictions = np.array(predictions)
    return write_bundle(
        bundles_root=Path(root),
        profile_name="tiny-test",
        model_bytes=model_bytes,
        quantization=quantization,
        inputs=tensor_specs(interpreter.get_input_details()),
        outputs=tensor_specs(interpreter.get_output_details()),
        preprocessing=PREPROCESSING,
        labels=[f"class{i}" for i in range(classes)],
        eval_images=images,
        eval_labels=labels,
        host_predictions=predictions,
        host_metrics={"accuracy": float(np.mean(predictions == labels)), "tflite_bytes": len(model_bytes)},
        provenance={"student_architecture": "tiny-test", "tool_versions": {"tensorflow": tf.__version__}},
    )

"""Make small but real bundles (real Keras model, real TFLite conversion) for tests.

Deploy and agent tests need a genuine bundle without paying for a full pipeline run; this builds
one in a few seconds with the same writer the package stage uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.bundle.manifest import MANIFEST, seal_manifest
from pipeline.bundle.writer import tensor_specs, write_bundle

PREPROCESSING = {"height": 12, "width": 12, "channels": 1, "scale": 1.0 / 255.0, "mean": 0.0, "std": 1.0}


def make_tiny_bundle(
    root: Path, quantization: str = "int8", seed: int = 0, classes: int = 3, count: int = 24, width: int = 4
) -> Path:
    """A 12x12 grey, ``classes``-way classifier whose class is the brightest image third.

    ``width`` (conv channels) makes a genuinely slower twin: 64 does ~16x the MACs of the default 4."""
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
            keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
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


def edit_manifest(bundle: Path, change: Callable[[dict[str, Any]], Any], reseal: bool = False) -> dict[str, Any]:
    """Rewrite ``bundle``'s manifest after ``change``; ``reseal`` also recomputes its id (a consistent forgery)."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    change(manifest)
    if reseal:
        manifest = seal_manifest(manifest, manifest["files"])
    (bundle / MANIFEST).write_text(json.dumps(manifest))  # json.dumps writes NaN as the bare word NaN
    return manifest


@dataclass(frozen=True)
class Tampering:
    """One edit of a sealed bundle that both the host's and the agent's verify must refuse."""

    name: str
    edit: Callable[[Path], Path]
    message: str  # regex, the same wording on both sides

    def apply(self, bundle: Path) -> Path:
        return self.edit(bundle)


def _manifest_edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], Path]:
    def edit(bundle: Path) -> Path:
        edit_manifest(bundle, change)
        return bundle

    return edit


_ID_MISMATCH = r"bundle_id [0-9a-f]{16} does not match the manifest and its files"
MANIFEST_TAMPERING = [
    Tampering("scale-nan", _manifest_edit(lambda m: m["preprocessing"].update(scale=float("nan"))), r"not strict JSON: NaN is not JSON"),
    Tampering("scale-changed", _manifest_edit(lambda m: m["preprocessing"].update(scale=1.0)), _ID_MISMATCH),
    Tampering("eval-count", _manifest_edit(lambda m: m["eval"].update(count=m["eval"]["count"] - 1)), _ID_MISMATCH),
    Tampering("labels-file", _manifest_edit(lambda m: m.update(labels="eval/labels.npy")), _ID_MISMATCH),
    Tampering("model-file", _manifest_edit(lambda m: m["model"].update(file="eval/images.npy")), _ID_MISMATCH),
    Tampering("renamed-directory", lambda b: b.rename(b.with_name("0123456789abcdef")), r"the directory is named 0123456789abcdef but holds bundle [0-9a-f]{16}"),
]

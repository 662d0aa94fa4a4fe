"""Every family converts to a fully int8 TFLite model that runs in ai_edge_litert, within budget."""

from __future__ import annotations

import contextlib
import io
import os

import keras
import numpy as np
import pytest

from pipeline.models.registry import FAMILIES, build_student
from tests.helpers.models import randomise_batchnorm

pytestmark = [
    pytest.mark.slow,
    # The converter always warns about int8 input statistics it derives from the representative data.
    pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected"),
]

MAX_TFLITE_BYTES = 120 * 1024  # the shipped int8 model budget for 28x28x1, 10 classes, width 1.0


def convert_int8(model: keras.Model, samples: np.ndarray) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([samples[i : i + 1]] for i in range(len(samples)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints every captured variable
        return converter.convert()


@pytest.mark.parametrize("family", FAMILIES)
def test_int8_conversion_runs_in_litert(family: str) -> None:
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(1)
    model = build_student(family, (28, 28, 1), 10, 1.0)
    randomise_batchnorm(model)
    rng = np.random.default_rng(3)
    samples = rng.uniform(0, 1, size=(32, 28, 28, 1)).astype("float32")
    model_bytes = convert_int8(model, samples)
    assert len(model_bytes) <= MAX_TFLITE_BYTES, f"{family}: {len(model_bytes) / 1024:.1f} KB"

    interpreter = Interpreter(model_content=model_bytes, num_threads=min(2, os.cpu_count() or 1))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    assert list(inp["shape"]) == [1, 28, 28, 1] and list(out["shape"]) == [1, 10]
    scale, zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    assert scale > 0 and out_scale > 0
    float_logits = np.asarray(model(samples[:8], training=False))
    int8_logits = []
    for sample in samples[:8]:
        q = np.clip(np.round(sample / scale + zero), -128, 127).astype(np.int8)[None]
        interpreter.set_tensor(inp["index"], q)
        interpreter.invoke()
        raw = interpreter.get_tensor(out["index"])
        assert raw.shape == (1, 10) and raw.dtype == np.int8
        int8_logits.append((raw.astype(np.float32) - out_zero) * out_scale)
    int8_logits = np.concatenate(int8_logits)
    # The quantized model computes the same function: its logits track the float model's.
    corr = np.corrcoef(float_logits.ravel(), int8_logits.ravel())[0, 1]
    assert corr > 0.9, f"{family}: int8 vs float logits correlation {corr:.3f}"

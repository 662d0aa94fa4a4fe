"""Keras → TFLite conversion in the four post-training quantization modes."""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Iterator

import numpy as np

from pipeline.progress import NullProgress, Progress

log = logging.getLogger(__name__)

MODES = ("float32", "float16", "dynamic", "int8")


def convert(model, mode: str, calibration: np.ndarray | None = None, int8_io: bool = True, progress: Progress = NullProgress()) -> bytes:
    """Return the .tflite flatbuffer for ``model`` quantized as ``mode``.

    ``calibration`` holds preprocessed float32 images; full-int8 needs it to choose activation
    ranges. ``int8_io`` makes the model's input and output int8 as well (what microcontroller-style
    runtimes and the Edge TPU want); otherwise they stay float32 with quantize ops inside.
    """
    import tensorflow as tf

    if mode not in MODES:
        raise ValueError(f"unknown quantization mode {mode!r}; expected one of {MODES}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        if calibration is None or len(calibration) == 0:
            raise ValueError("full-int8 quantization needs at least one calibration image")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        with progress.task("calibrating int8", total=len(calibration)) as advance:

            def representative() -> Iterator[list[np.ndarray]]:
                for image in calibration:
                    yield [image[None].astype(np.float32)]
                    advance(1)

            converter.representative_dataset = representative
            return _quiet_convert(converter)
    return _quiet_convert(converter)


def _quiet_convert(converter) -> bytes:
    """Convert, moving the SavedModel export chatter Keras prints on stdout into the debug log."""
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):
        model_bytes = bytes(converter.convert())
    log.debug("converter output:\n%s", chatter.getvalue())
    return model_bytes

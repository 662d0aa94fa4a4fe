"""Keras → ONNX with tf2onnx, checked against the Keras model with onnxruntime.

tf2onnx's ``from_keras`` expects tf.keras (Keras 2) internals, so a Keras 3 model is traced
through a ``tf.function`` with a fixed input signature (``from_function``) instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from pipeline.errors import ConfigError, ConversionError
from pipeline.onnx.check import AgreementReport, Tolerance, compare, onnx_session, run_onnx, to_layout

log = logging.getLogger(__name__)

OPSET_RANGE = (13, 18)  # what tf2onnx 1.17 writes
INPUT_NAME = "image"


def export_keras(model, opset: int = 17, layout: str = "NHWC") -> bytes:
    """Serialized ONNX for ``model`` (one image input, one output); ``layout`` NCHW adds the
    transpose a PyTorch-style model would have, so the ONNX input is (batch, C, H, W)."""
    import tensorflow as tf

    from pipeline.onnx.graph import need

    tf2onnx = need("tf2onnx")

    low, high = OPSET_RANGE
    if not low <= int(opset) <= high:
        raise ConfigError(f"ONNX opset {opset} is not supported by tf2onnx here; use {low} to {high}.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError(f"Model '{model.name}' has {len(model.inputs)} inputs and {len(model.outputs)} outputs; ONNX export needs one of each.")
    h, w, c = (int(d) for d in model.inputs[0].shape[1:])
    if layout == "NCHW":
        spec = tf.TensorSpec((None, c, h, w), tf.float32, name=INPUT_NAME)
        function = tf.function(lambda x: model(tf.transpose(x, [0, 2, 3, 1]), training=False))
    else:
        spec = tf.TensorSpec((None, h, w, c), tf.float32, name=INPUT_NAME)
        function = tf.function(lambda x: model(x, training=False))
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            proto, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=int(opset))
    except Exception as exc:  # tf2onnx raises per-op errors of many types
        raise ConversionError(f"tf2onnx could not export model '{model.name}' at opset {opset}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}.") from None
    log.debug("tf2onnx output:\n%s", chatter.getvalue())
    proto.producer_name = "edgeship (tf2onnx)"
    return proto.SerializeToString()


def check_export(
    onnx_bytes: bytes,
    model,
    images_nhwc: np.ndarray,
    tolerance: Tolerance,
    *,
    labels: Optional[np.ndarray] = None,
    layout: str = "NHWC",
    source: str = "the exported ONNX model",
) -> AgreementReport:
    """onnxruntime on the ONNX vs Keras on the same images; ConversionError if they disagree."""
    reference = np.asarray(model.predict(images_nhwc, batch_size=256, verbose=0))
    candidate = run_onnx(onnx_session(onnx_bytes), to_layout(images_nhwc, layout), source=source)
    report = compare(reference, candidate, "onnxruntime vs Keras", tolerance, labels)
    if not report.passed:
        raise ConversionError(f"{source} does not agree with the Keras model: {report.describe()}.")
    return report


def export_and_check(
    model,
    images_nhwc: np.ndarray,
    out_path: Path,
    *,
    opset: int = 17,
    tolerance: Tolerance = Tolerance(),
    labels: Optional[np.ndarray] = None,
    layout: str = "NHWC",
) -> AgreementReport:
    """Export ``model`` to ``out_path`` and check it; the file is written only if the check passes."""
    from pipeline.fsutil import atomic_write_bytes

    data = export_keras(model, opset=opset, layout=layout)
    report = check_export(data, model, images_nhwc, tolerance, labels=labels, layout=layout, source=f"ONNX export of '{model.name}'")
    atomic_write_bytes(Path(out_path), data)
    return report

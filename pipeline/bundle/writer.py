"""Assemble a bundle directory from a converted model and its eval subset."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from pipeline.clock import utc_now
from pipeline.bundle.manifest import finalize_bundle

MODEL_FILE = "model.tflite"
LABELS_FILE = "labels.txt"
EVAL_IMAGES = "eval/images.npy"
EVAL_LABELS = "eval/labels.npy"
EVAL_HOST_PREDICTIONS = "eval/host_predictions.npy"


def tensor_specs(details: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The JSON-safe part of a TFLite interpreter's input or output details."""
    specs = []
    for d in details:
        scale, zero_point = d.get("quantization", (0.0, 0))
        specs.append(
            {
                "name": d["name"],
                "shape": [int(v) for v in d["shape"]],
                "dtype": np.dtype(d["dtype"]).name,
                "scale": float(scale),
                "zero_point": int(zero_point),
            }
        )
    return specs


def write_bundle(
    *,
    bundles_root: Path,
    profile_name: str,
    model_bytes: bytes,
    quantization: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    preprocessing: dict[str, Any],
    labels: Sequence[str],
    eval_images: np.ndarray,
    eval_labels: np.ndarray,
    host_predictions: np.ndarray,
    host_metrics: dict[str, Any],
    provenance: dict[str, Any],
    extra_files: Optional[dict[str, bytes]] = None,
    extra_models: Optional[list[dict[str, Any]]] = None,
) -> Path:
    """Write the files, hash them, and return ``bundles_root/<bundle id>``.

    The id covers the whole manifest except ``created`` (see :data:`~pipeline.bundle.manifest.UNHASHED_KEYS`),
    so the same model and data always give the same id and a redeploy can be skipped. ``extra_models``
    describes other formats of the model among ``extra_files`` (``[{file, format, ...}]``, e.g. ONNX).
    """
    if eval_images.dtype != np.uint8:
        raise ValueError("eval images must be raw uint8; preprocessing happens on the device")
    Path(bundles_root).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=bundles_root))
    (staging / "eval").mkdir()
    (staging / MODEL_FILE).write_bytes(model_bytes)
    (staging / LABELS_FILE).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    np.save(staging / EVAL_IMAGES, eval_images, allow_pickle=False)
    np.save(staging / EVAL_LABELS, eval_labels.astype(np.int64), allow_pickle=False)
    np.save(staging / EVAL_HOST_PREDICTIONS, host_predictions.astype(np.int64), allow_pickle=False)
    for rel, data in (extra_files or {}).items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(data)
    manifest = {
        "created": utc_now("seconds"),
        "profile": profile_name,
        "model": {
            "file": MODEL_FILE,
            "bytes": len(model_bytes),
            "quantization": quantization,
            "inputs": inputs,
            "outputs": outputs,
        },
        "preprocessing": dict(preprocessing, layout="NHWC"),
        "labels": LABELS_FILE,
        "eval": {
            "inputs": EVAL_IMAGES,
            "labels": EVAL_LABELS,
            "host_predictions": EVAL_HOST_PREDICTIONS,
            "count": int(len(eval_labels)),
        },
        "host_metrics": host_metrics,
        "provenance": provenance,
    }
    if extra_models:
        missing = [m.get("file") for m in extra_models if m.get("file") not in (extra_files or {})]
        if missing:
            raise ValueError(f"extra_models name files that are not in extra_files: {missing}")
        manifest["extra_models"] = extra_models
    return finalize_bundle(staging, manifest, bundles_root)

"""Stand-alone ONNX → .tflite (``edgeship convert onnx2tflite``) with the build's checks.

The ONNX model is converted with onnx2tf, the converted model is checked against onnxruntime, it
is quantized by the same code as the pipeline's quantize stage, and the .tflite is checked against
onnxruntime again. Real images (and labels, for the layout check) are the caller's, e.g. a build
profile's data (``pipeline.onnx_build.profile_images``); without them the checks run on random
images and say so.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from pipeline.onnx.check import AgreementReport, Tolerance, check_conversion, compare, onnx_session, run_onnx, to_layout
from pipeline.onnx.graph import InputSize, load_onnx, prepare

log = logging.getLogger(__name__)

RANDOM_SAMPLES = 64


@dataclass
class SampleImages:
    """Preprocessed NHWC float32 images to check on, optional labels and int8 calibration images."""

    images: np.ndarray
    labels: Optional[np.ndarray] = None
    calibration: Optional[np.ndarray] = None
    real: bool = True


@dataclass
class TfliteConversion:
    out: Path
    tflite_bytes: int
    quantization: str
    input_shape: tuple[int, int, int]
    layout: str
    reports: list[AgreementReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def random_images(shape: tuple[int, int, int], count: int = RANDOM_SAMPLES, seed: int = 0) -> SampleImages:
    """Uniform [0, 1) images: enough to catch a broken conversion, not to calibrate int8 well."""
    images = np.random.default_rng(seed).random((count, *shape), dtype=np.float32)
    return SampleImages(images=images, calibration=images, real=False)


def onnx_to_tflite(
    model_path: Path,
    out: Path,
    *,
    layout: str = "NCHW",
    size: InputSize = InputSize(),
    quantization: str = "float32",
    int8_io: bool = True,
    tolerance: Tolerance = Tolerance(),
    samples: Optional[SampleImages] = None,
    keys: Optional[dict[str, str]] = None,
) -> TfliteConversion:
    """Convert ``model_path`` to ``out`` (.tflite); raises ConfigError / ConversionError naming the
    file and the problem, and writes nothing unless every check passes."""
    from pipeline.fsutil import atomic_write_bytes
    from pipeline.onnx.importer import convert_prepared, load_converted
    from pipeline.quantize.convert import convert
    from pipeline.quantize.litert_eval import predict as tflite_predict

    keys = keys or {"layout": "--layout", "height": "--height", "width": "--width", "channels": "--channels"}
    source = f"ONNX model {model_path}"
    prepared = prepare(load_onnx(Path(model_path)), layout, size, None, source, keys)
    warnings = []
    if samples is None:
        samples = random_images(prepared.input_shape)
        warnings.append(f"checked on {len(samples.images)} random images; pass --profile to check on real images (and to calibrate int8 on them)")
    elif tuple(samples.images.shape[1:]) != prepared.input_shape:
        from pipeline.errors import ConfigError

        raise ConfigError(
            f"{source} takes {prepared.input_shape} (height, width, channels) images, but the profile's images are "
            f"{tuple(samples.images.shape[1:])}."
        )
    with tempfile.TemporaryDirectory(prefix="edgeship-onnx2tf-") as tmp:
        imported = convert_prepared(prepared, Path(tmp), source)
        model = load_converted(Path(tmp), imported.input_shape)
        session = onnx_session(str(imported.onnx_path))
        conversion = check_conversion(
            session, lambda x: np.asarray(model.predict(x, batch_size=256, verbose=0)), samples.images, layout, tolerance,
            labels=samples.labels, source=source, layout_key=keys["layout"],
        )
        calibration = samples.calibration if quantization in ("int8",) else None
        tflite = convert(model, quantization, calibration, int8_io)
        reference = run_onnx(session, to_layout(samples.images, layout), source=source)
    exact = quantization == "float32"
    tflite_report = compare(reference, tflite_predict(tflite, samples.images), f".tflite {quantization} vs onnxruntime", tolerance if exact else None, samples.labels)
    if exact and not tflite_report.passed:
        from pipeline.errors import ConversionError

        raise ConversionError(f"{source}: the float32 .tflite does not agree with onnxruntime: {tflite_report.describe()}.")
    if not exact and tflite_report.top1_agreement < tolerance.min_top1_agreement:
        warnings.append(f"{quantization} .tflite agrees with onnxruntime on top-1 for {tflite_report.top1_agreement:.4f} of the images (quantization error)")
    if quantization == "int8" and not samples.real:
        warnings.append("int8 was calibrated on random images; its accuracy on real images may be poor")
    atomic_write_bytes(Path(out), tflite)
    return TfliteConversion(
        out=Path(out), tflite_bytes=len(tflite), quantization=quantization, input_shape=prepared.input_shape,
        layout=layout, reports=[conversion, tflite_report], warnings=warnings,
    )

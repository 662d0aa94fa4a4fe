"""Agreement between a converted model and onnxruntime running the ONNX original, on real inputs.

A conversion is trusted only when the largest absolute difference of the outputs and the share of
images with the same top-1 class are within tolerance. The same comparison, run with the images
transposed to the other layout, tells a wrong layout setting apart from a broken conversion.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import numpy as np

from pipeline.errors import ConfigError, ConversionError

log = logging.getLogger(__name__)

# A layout is called wrong when onnxruntime's top-1 against the labels is at least this much
# better with the images in the other layout.
LAYOUT_ACCURACY_GAP = 0.2


@dataclass(frozen=True)
class Tolerance:
    max_abs_error: float = 1e-3
    min_top1_agreement: float = 0.999


@dataclass(frozen=True)
class AgreementReport:
    """How a candidate's outputs compare with the reference's on the same images."""

    what: str
    samples: int
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float
    passed: bool
    max_abs_error_limit: Optional[float] = None
    min_top1_agreement: Optional[float] = None
    reference_top1: Optional[float] = None  # against the labels, when there are labels
    candidate_top1: Optional[float] = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"max abs error {self.max_abs_error:.3g} (limit {self.max_abs_error_limit}), top-1 agreement "
            f"{self.top1_agreement:.4f} (minimum {self.min_top1_agreement}) on {self.samples} images"
        )


def compare(
    reference: np.ndarray,
    candidate: np.ndarray,
    what: str,
    tolerance: Optional[Tolerance] = None,
    labels: Optional[np.ndarray] = None,
) -> AgreementReport:
    """Compare two (N, classes) outputs; ``passed`` is True without a ``tolerance``."""
    reference = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    candidate = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if reference.shape != candidate.shape:
        raise ConversionError(f"{what}: outputs have shapes {candidate.shape} and {reference.shape} (reference); they cannot agree.")
    diff = np.abs(reference - candidate)
    max_err = float(diff.max()) if diff.size else 0.0
    agreement = float(np.mean(reference.argmax(1) == candidate.argmax(1))) if len(reference) else 1.0
    passed = tolerance is None or (max_err <= tolerance.max_abs_error and agreement >= tolerance.min_top1_agreement)
    return AgreementReport(
        what=what,
        samples=int(len(reference)),
        max_abs_error=max_err,
        mean_abs_error=float(diff.mean()) if diff.size else 0.0,
        top1_agreement=agreement,
        passed=bool(passed),
        max_abs_error_limit=None if tolerance is None else tolerance.max_abs_error,
        min_top1_agreement=None if tolerance is None else tolerance.min_top1_agreement,
        reference_top1=None if labels is None else float(np.mean(reference.argmax(1) == labels)),
        candidate_top1=None if labels is None else float(np.mean(candidate.argmax(1) == labels)),
    )


def onnx_session(model: bytes | str, threads: Optional[int] = None):
    """An onnxruntime CPU session for a model file path or serialized bytes."""
    from pipeline.onnx.graph import need

    ort = need("onnxruntime")

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; warnings about unused initializers are noise here
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def to_layout(images_nhwc: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)) if layout == "NCHW" else images_nhwc


def _fits(session, array: np.ndarray) -> bool:
    shape = session.get_inputs()[0].shape
    return len(shape) == array.ndim and all(not isinstance(d, int) or d == s for d, s in zip(shape[1:], array.shape[1:]))


def run_onnx(session, images: np.ndarray, batch_size: int = 256, source: str = "the ONNX model") -> np.ndarray:
    """Outputs of ``session`` for ``images`` (already in the model's layout), in batches."""
    name = session.get_inputs()[0].name
    outputs = []
    for start in range(0, len(images), batch_size):
        chunk = np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
        try:
            outputs.append(np.asarray(session.run(None, {name: chunk})[0]))
        except Exception as exc:  # onnxruntime's Fail/InvalidArgument carry the reason
            raise ConversionError(
                f"onnxruntime could not run {source} on a batch of {len(chunk)} images of shape "
                f"{list(chunk.shape[1:])}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}. "
                "If the model fixes its batch size, export it with a dynamic batch dimension."
            ) from None
    return np.concatenate(outputs)


def check_conversion(
    session,
    predict: Callable[[np.ndarray], np.ndarray],
    images_nhwc: np.ndarray,
    layout: str,
    tolerance: Tolerance,
    *,
    labels: Optional[np.ndarray] = None,
    source: str = "the ONNX model",
    layout_key: str = "--layout",
    what: str = "onnx2tf vs onnxruntime",
) -> AgreementReport:
    """Compare ``predict`` (NHWC images) with onnxruntime (images in ``layout``); raise if they disagree.

    Two ways to catch a wrong ``layout`` (ConfigError naming ``layout_key``):

    * with ``labels``, onnxruntime's own top-1 is compared for both layouts: a clearly better score
      with the images transposed means the model reads the other layout;
    * when the outputs disagree, onnxruntime is run on the transposed images too: if those agree,
      the conversion treated the input in the other layout.
    """
    other = "NHWC" if layout == "NCHW" else "NCHW"
    reference = run_onnx(session, to_layout(images_nhwc, layout), source=source)
    candidate = np.asarray(predict(images_nhwc))
    report = compare(reference, candidate, what, tolerance, labels)
    transposed = to_layout(images_nhwc, other)
    can_transpose = _fits(session, transposed)
    if labels is not None and can_transpose:
        alt = compare(run_onnx(session, transposed, source=source), candidate, what, None, labels)
        if alt.reference_top1 is not None and report.reference_top1 is not None and alt.reference_top1 >= report.reference_top1 + LAYOUT_ACCURACY_GAP:
            raise ConfigError(
                f"{source}: the input layout looks wrong. With the images in {layout} ({layout_key}) onnxruntime "
                f"gets top-1 {report.reference_top1:.3f} on {report.samples} labelled images, with them in {other} "
                f"{alt.reference_top1:.3f}. The model reads {other}: set {layout_key} to {other}."
            )
    if report.passed:
        return report
    if can_transpose:
        alt = compare(run_onnx(session, transposed, source=source), candidate, what, tolerance)
        if alt.passed:
            raise ConfigError(
                f"{source}: the input layout looks wrong. The converted model disagrees with onnxruntime fed "
                f"{layout} images ({report.describe()}) but agrees with it fed {other} images. Set {layout_key} to {other}."
            )
    raise ConversionError(
        f"{source}: the converted model does not agree with onnxruntime: {report.describe()}. The conversion "
        "is not trusted; raise the tolerance only if this difference is acceptable for your use."
    )

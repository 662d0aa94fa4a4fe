"""Mixed-precision post-training quantization: full int8, except the layers that int8 breaks.

When full int8 loses more accuracy than the profile allows, TFLite's quantization debugger measures
each quantized op's error against its float twin run on the same input (layer by layer, so errors
do not pile up), and selective quantization keeps the worst ops in float (``denylisted_nodes``),
with quantize/dequantize ops around them. We keep as few ops in float as meet the budget, since
each one gives back size and int8 speed.

Sensitivity is the debugger's recommended ``rmse / scale``: the op's output error measured in
quantization steps. Pure rounding gives about 0.29 (1/sqrt(12)); much more means clipping or
weights that int8 cannot represent.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import numpy as np

from pipeline.progress import NullProgress, Progress
from pipeline.quantize.convert import convert
from pipeline.quantize.litert_eval import p50_invoke_ms, predict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerSensitivity:
    """One quantized op: ``name`` is its output tensor (what ``denylisted_nodes`` takes)."""

    name: str
    op: str
    metric: float  # rmse / scale
    mse: float
    scale: float


@dataclass
class MixedResult:
    """The chosen model and what it cost; ``kept`` are the ops left in float (empty = full int8)."""

    model_bytes: bytes
    kept: list[str]
    met_budget: bool
    target_accuracy: float
    accuracy: dict[str, float]  # float32 / int8 / mixed
    size_bytes: dict[str, int]
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50 at batch 1, empty if not measured
    sensitivity: list[LayerSensitivity] = field(default_factory=list)
    tried: list[tuple[int, float]] = field(default_factory=list)  # (ops in float, accuracy)

    def as_dict(self) -> dict:
        """Everything but the model bytes, for JSON reports."""
        return {
            "kept_in_float": list(self.kept),
            "met_budget": self.met_budget,
            "target_accuracy": self.target_accuracy,
            "accuracy": dict(self.accuracy),
            "size_bytes": dict(self.size_bytes),
            "latency_ms": dict(self.latency_ms),
            "sensitivity": [{"name": s.name, "op": s.op, "rmse_over_scale": s.metric} for s in self.sensitivity],
            "tried": [{"float_ops": k, "accuracy": a} for k, a in self.tried],
        }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keras' SavedModel export chatter goes to the debug log; the debugger's own use of the
    deprecated ``tf.lite.Interpreter`` warns on every construction, which is not ours to fix."""
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*Statistics for quantized inputs were expected.*")
        yield
    log.debug("converter output:\n%s", chatter.getvalue())


def _debugger(model, calibration: np.ndarray, progress: Progress):
    """A QuantizationDebugger calibrated on ``calibration`` with per-layer stats already collected."""
    import tensorflow as tf

    if calibration is None or len(calibration) == 0:
        raise ValueError("layer sensitivity needs at least one calibration image")
    tick: list[Callable[[float], None]] = [lambda _=1: None]  # the running task's advance

    def samples() -> Iterator[list[np.ndarray]]:
        for image in calibration:
            yield [image[None].astype(np.float32)]
            tick[0](1)

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    with progress.task("calibrating for sensitivity", total=len(calibration)) as advance, _quiet():
        tick[0] = advance
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=samples)
    with progress.task("measuring layer sensitivity", total=len(calibration)) as advance, _quiet():
        tick[0] = advance
        debugger.run()
    return debugger


def _sensitivities(debugger) -> list[LayerSensitivity]:
    """Rows of the debugger's public CSV dump, most sensitive first (non-finite metrics last)."""
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    rows = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        mse, scale = float(row["mean_squared_error"]), float(row["scale"])
        metric = math.sqrt(mse) / scale if scale > 0 else float("nan")
        rows.append(LayerSensitivity(row["tensor_name"], row["op_name"], metric, mse, scale))
    return sorted(rows, key=lambda s: (not math.isfinite(s.metric), -s.metric if math.isfinite(s.metric) else 0.0))


def layer_sensitivity(model, calibration: np.ndarray, progress: Progress = NullProgress()) -> list[LayerSensitivity]:
    """Per-op int8 error of ``model`` on ``calibration`` images, most sensitive first."""
    return _sensitivities(_debugger(model, calibration, progress))


def _denylisted_model(debugger, nodes: list[str]) -> bytes:
    """The debugger's calibrated model quantized with ``nodes`` left in float (float32 I/O)."""
    import tensorflow as tf

    with _quiet():
        try:
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(nodes))
        except ValueError:
            # Raised after the options are stored when no op is left to verify; the model is still fine.
            log.debug("no quantized op left to verify with %d nodes denylisted", len(nodes))
        return bytes(debugger.get_nondebug_quantized_model())


def accuracy(model_bytes: bytes, x: np.ndarray, y: np.ndarray, progress: Progress = NullProgress(), label: str = "evaluating") -> float:
    """Top-1 accuracy of a .tflite on host."""
    logits = predict(model_bytes, x, progress=progress, label=label)
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(y).reshape(-1)))


def p50_latency_ms(model_bytes: bytes, image: np.ndarray, runs: int = 100, threads: int = 1) -> float:
    """Median single-image invoke time on this host (after one warm-up), in milliseconds.

    A host figure: it shows what keeping ops in float costs relative to int8, not device latency.
    """
    return p50_invoke_ms(model_bytes, image, runs=runs, threads=threads, warmup=1)


def search_float_count(limit: int, evaluate: Callable[[int], float], target: float) -> tuple[int, dict[int, float]]:
    """Fewest ops in float (1..limit) whose accuracy reaches ``target``: try 1, 2, 4, ... then bisect.

    Assumes accuracy roughly grows with the count, which keeps evaluations to about 2*log2(limit).
    Returns (count, accuracies tried). When nothing reaches ``target`` the count is ``limit``: the
    budget says accuracy comes first, so the caller gets as much float as it allowed.
    """
    tried: dict[int, float] = {}

    def score(k: int) -> float:
        if k not in tried:
            tried[k] = evaluate(k)
        return tried[k]

    low, k = 0, 1  # low: largest count known to miss
    while k <= limit:
        if score(k) >= target:
            high = k
            while high - low > 1:
                mid = (low + high) // 2
                if score(mid) >= target:
                    high = mid
                else:
                    low = mid
            return high, tried
        low = k
        k = limit if k < limit < 2 * k else 2 * k
    return max(limit, 0), tried


def convert_mixed(
    model,
    calibration: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    max_accuracy_drop: float,
    float_accuracy: Optional[float] = None,
    max_float_layers: Optional[int] = None,
    int8_io: bool = True,
    latency_runs: int = 50,
    progress: Progress = NullProgress(),
) -> MixedResult:
    """Full int8 if it stays within ``max_accuracy_drop`` of float32, else int8 with the most
    sensitive ops in float, as few as reach ``float_accuracy - max_accuracy_drop``.

    ``float_accuracy`` defaults to the float32 .tflite's accuracy on (x_eval, y_eval). The int8
    candidate is :func:`convert`'s (int8 I/O if ``int8_io``); mixed models keep float32 I/O.
    ``max_float_layers`` caps how many ops may stay float. ``latency_runs=0`` skips latency.
    """
    float_bytes = convert(model, "float32", progress=progress)
    float_measured = None if float_accuracy is not None else accuracy(float_bytes, x_eval, y_eval, progress, "evaluating float32")
    float_accuracy = float_measured if float_accuracy is None else float(float_accuracy)
    int8_bytes = convert(model, "int8", calibration, int8_io=int8_io, progress=progress)
    int8_accuracy = accuracy(int8_bytes, x_eval, y_eval, progress, "evaluating int8")
    target = float_accuracy - max_accuracy_drop
    log.info("float32 %.4f, int8 %.4f, target %.4f", float_accuracy, int8_accuracy, target)

    sensitivity: list[LayerSensitivity] = []
    tried: dict[int, float] = {}
    if int8_accuracy >= target:
        kept: list[str] = []
        mixed_bytes, mixed_accuracy, met = int8_bytes, int8_accuracy, True
    else:
        debugger = _debugger(model, calibration, progress)
        sensitivity = _sensitivities(debugger)
        names = [s.name for s in sensitivity]
        limit = len(names) if max_float_layers is None else max(0, min(max_float_layers, len(names)))
        candidates: dict[int, bytes] = {}

        def evaluate(k: int) -> float:
            # Every op in float is just the float32 model; the quantizer cannot produce it cleanly.
            candidates[k] = float_bytes if k == len(names) else _denylisted_model(debugger, names[:k])
            score = accuracy(candidates[k], x_eval, y_eval, progress, f"evaluating {k} op(s) in float")
            progress.note(f"mixed precision: {k} op(s) in float -> accuracy {score:.4f} (target {target:.4f})")
            return score

        count, tried = search_float_count(limit, evaluate, target)
        if count == 0:  # max_float_layers=0 (or nothing to keep): plain int8 is all there is
            kept, mixed_bytes, mixed_accuracy = [], int8_bytes, int8_accuracy
        else:
            kept, mixed_bytes, mixed_accuracy = names[:count], candidates[count], tried[count]
        if kept and len(kept) < len(names) and len(mixed_bytes) >= len(float_bytes):
            # Quantize/dequantize pairs and float weights can outgrow the float32 model itself.
            plain = tried.get(len(names), float_measured)
            if plain is None:
                plain = accuracy(float_bytes, x_eval, y_eval, progress, "evaluating float32")
            if plain >= mixed_accuracy:
                log.info("float32 is no larger than the mixed model and as accurate: using it")
                kept, mixed_bytes, mixed_accuracy = list(names), float_bytes, plain
        met = mixed_accuracy >= target
        if not met:
            log.warning("mixed precision missed the budget: best %.4f with %d op(s) in float, target %.4f", mixed_accuracy, len(kept), target)

    result = MixedResult(
        model_bytes=mixed_bytes,
        kept=kept,
        met_budget=met,
        target_accuracy=target,
        accuracy={"float32": float_accuracy, "int8": int8_accuracy, "mixed": mixed_accuracy},
        size_bytes={"float32": len(float_bytes), "int8": len(int8_bytes), "mixed": len(mixed_bytes)},
        sensitivity=sensitivity,
        tried=sorted(tried.items()),
    )
    if latency_runs > 0 and len(x_eval):
        with progress.task("timing float32 / int8 / mixed", total=3) as advance:
            for label, blob in (("float32", float_bytes), ("int8", int8_bytes), ("mixed", mixed_bytes)):
                result.latency_ms[label] = p50_latency_ms(blob, x_eval[:1], runs=latency_runs)
                advance(1)
    return result

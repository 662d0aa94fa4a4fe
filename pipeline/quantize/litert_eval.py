"""Run a .tflite model on the host with ai-edge-litert, exactly as the device will."""

from __future__ import annotations

import time

import numpy as np

from pipeline.progress import NullProgress, Progress


def load_interpreter(model_bytes: bytes, threads: int = 2):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes, num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def quantize_input(images: np.ndarray, detail: dict) -> np.ndarray:
    """Map preprocessed float images onto the input tensor's dtype (int8/uint8 use scale, zero point)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return images.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    # float64 arithmetic, as in device_agents/agent.py, so host and device quantize identically.
    q = np.round(images.astype(np.float64) / float(scale) + float(zero_point))
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_output(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind == "f" or scale == 0:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_point) * scale


def predict(model_bytes: bytes, images: np.ndarray, batch_size: int = 256, progress: Progress = NullProgress(), label: str = "evaluating") -> np.ndarray:
    """Float logits for preprocessed ``images``, run in batches by resizing the input tensor."""
    interpreter = load_interpreter(model_bytes)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    batch_size = max(1, min(batch_size, len(images)))
    interpreter.resize_tensor_input(inp["index"], [batch_size, *images.shape[1:]])
    interpreter.allocate_tensors()
    results = []
    with progress.task(label, total=len(images)) as advance:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            real = len(chunk)
            if real < batch_size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - real, axis=0)])
            interpreter.set_tensor(inp["index"], quantize_input(chunk, inp))
            interpreter.invoke()
            results.append(dequantize_output(interpreter.get_tensor(out["index"]), out)[:real])
            advance(real)
    return np.concatenate(results)


def p50_invoke_ms(model_bytes: bytes, image: np.ndarray, runs: int = 100, threads: int = 1, warmup: int = 1) -> float:
    """Median single-image ``invoke()`` time in this process, in milliseconds.

    ``image`` is one preprocessed float image (with or without the batch axis); it is quantized for
    int8 inputs. A host floor to compare models or the agent against, not a device latency.
    """
    interpreter = load_interpreter(model_bytes, threads=threads)
    detail = interpreter.get_input_details()[0]
    sample = image if image.ndim == len(detail["shape"]) else image[None]
    interpreter.set_tensor(detail["index"], quantize_input(sample[:1], detail))
    for _ in range(max(0, warmup)):
        interpreter.invoke()
    times = []
    for _ in range(max(1, runs)):
        started = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000.0)


def op_count(model_bytes: bytes) -> int:
    """Operators the interpreter runs per invoke (its main subgraph): each has a fixed cost that
    pruning channels does not remove, which is why latency does not follow MACs on small models."""
    interpreter = load_interpreter(model_bytes, threads=1)
    # LiteRT's own listing (there is no public op count). It adds one DELEGATE node when XNNPACK
    # takes the graph over; XNNPACK still runs one operator per model op, so that node is not counted.
    return sum(1 for op in interpreter._get_ops_details() if op.get("op_name") != "DELEGATE")

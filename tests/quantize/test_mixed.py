"""Mixed-precision PTQ: per-op sensitivity from TFLite's quantization debugger, and the search."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.quantize.mixed import search_float_count

QUANTIZE_OPS = {"QUANTIZE", "DEQUANTIZE", "DELEGATE"}


def compute_ops(model_bytes: bytes) -> list[tuple[str, list[str]]]:
    """(op name, input dtypes) of each real op in a .tflite, skipping (de)quantize and delegates."""
    from pipeline.quantize.litert_eval import load_interpreter

    interpreter = load_interpreter(model_bytes, threads=1)
    dtypes = {d["index"]: np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}
    ops = []
    for op in interpreter._get_ops_details():  # the only way to list ops in ai_edge_litert
        if op["op_name"] not in QUANTIZE_OPS:
            ops.append((op["op_name"], [dtypes[i] for i in op["inputs"] if i >= 0]))
    return ops


@pytest.fixture(scope="module")
def trained() -> tuple:
    """A width-0.25 MobileNet v1 on 16x16 synthetic images (class = brightest band), a few steps."""
    import keras

    from pipeline.models.registry import build_student

    rng = np.random.default_rng(0)
    classes, count = 4, 64
    x = rng.uniform(0, 0.3, size=(count, 16, 16, 1)).astype("float32")
    y = np.arange(count) % classes
    for i, label in enumerate(y):
        x[i, label * 4 : label * 4 + 4] += 0.7
    keras.utils.set_random_seed(0)
    model = build_student("mobilenet_v1", (16, 16, 1), classes, 0.25)
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    return model, x, y


def test_search_finds_fewest_float_ops_with_few_evaluations() -> None:
    calls: list[int] = []

    def evaluate(k: int) -> float:
        calls.append(k)
        return 0.5 + 0.05 * k  # reaches 0.8 at k = 6

    count, tried = search_float_count(20, evaluate, 0.8)
    assert count == 6
    assert tried[6] >= 0.8 and tried[5] < 0.8
    assert len(calls) == len(set(calls)) <= 2 * math.ceil(math.log2(20))


def test_search_gives_the_limit_when_the_budget_is_unreachable() -> None:
    count, tried = search_float_count(5, lambda k: 0.1 * k, 2.0)
    assert count == 5
    assert sorted(tried) == [1, 2, 4, 5]
    assert search_float_count(0, lambda k: 1.0, 0.5) == (0, {})


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected")
def test_sensitivity_has_one_finite_entry_per_quantized_op(trained) -> None:
    from pipeline.quantize.convert import convert
    from pipeline.quantize.mixed import layer_sensitivity

    model, x, _ = trained
    sensitivity = layer_sensitivity(model, x[:16])
    int8_ops = compute_ops(convert(model, "int8", x[:16], int8_io=False))
    assert len(sensitivity) == len(int8_ops)
    assert sorted(s.op for s in sensitivity) == sorted(name for name, _ in int8_ops)
    assert all(math.isfinite(s.metric) and s.metric >= 0 for s in sensitivity)
    metrics = [s.metric for s in sensitivity]
    assert metrics == sorted(metrics, reverse=True)
    assert len({s.name for s in sensitivity}) == len(sensitivity)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected")
def test_generous_budget_returns_full_int8(trained) -> None:
    from pipeline.quantize.mixed import convert_mixed

    model, x, y = trained
    result = convert_mixed(model, x[:16], x, y, max_accuracy_drop=1.0, latency_runs=0)
    assert result.kept == [] and result.met_budget
    assert result.sensitivity == []  # the debugger is not needed when int8 already passes
    assert result.size_bytes["mixed"] == result.size_bytes["int8"] < result.size_bytes["float32"]
    assert result.accuracy["mixed"] == result.accuracy["int8"]
    assert all(dtype != "float32" for _, dtypes in compute_ops(result.model_bytes) for dtype in dtypes)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected")
def test_unreachable_budget_keeps_sensitive_ops_in_float(trained) -> None:
    from pipeline.quantize.mixed import convert_mixed

    model, x, y = trained
    result = convert_mixed(model, x[:16], x, y, max_accuracy_drop=-1.0, max_float_layers=2, latency_runs=3)
    assert not result.met_budget
    assert result.kept == [s.name for s in result.sensitivity[:2]]
    assert [k for k, _ in result.tried] == [1, 2]
    float_ops = [name for name, dtypes in compute_ops(result.model_bytes) if dtypes and all(d == "float32" for d in dtypes)]
    assert len(float_ops) == 2
    assert result.size_bytes["int8"] < result.size_bytes["mixed"] == len(result.model_bytes)
    assert set(result.latency_ms) == {"float32", "int8", "mixed"} and all(v > 0 for v in result.latency_ms.values())
    assert result.as_dict()["kept_in_float"] == result.kept

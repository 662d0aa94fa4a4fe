"""Where a training step's CPU time goes, by ablation: BatchNorm as Keras computes it, fused, or gone.

Each cell is a fresh process pinned to a thread count (TensorFlow sizes its pools once), training
one model on fixed random 28x28 images through the build's own loss and batches. "no BatchNorm"
is not a recipe: it bounds what any faster BatchNorm could still win. Writes
``results/bench/trainer.json``.
"""

from __future__ import annotations

from typing import Any

from pipeline.bench.common import call_pinned, target, write_result
from pipeline.progress import NullProgress, Progress

MODELS = ("mobilenet_v1", "squeezenet", "teacher")
MODES = ("keras", "fused", "none")
STEPS = 30


def _build(model: str):
    if model == "teacher":
        from pipeline.models.teacher import build_resnet_teacher

        return build_resnet_teacher((28, 28, 1), 10, 32, (2, 2, 2))
    from pipeline.models.registry import build_student

    return build_student(model, (28, 28, 1), 10)


def _without_batchnorm(model):
    """The same graph with every BatchNormalization replaced by an identity (ablation only)."""
    import keras

    class PassThrough(keras.layers.Layer):  # takes BatchNorm's call arguments, does nothing
        def call(self, inputs, training=None, mask=None):
            return inputs

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return PassThrough(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


def measure_cell(model_name: str, mode: str, steps: int = STEPS) -> dict[str, Any]:
    """Median milliseconds per training step for one (model, BatchNorm mode), in this process."""
    import contextlib
    import statistics
    import time

    import keras
    import numpy as np

    from pipeline.training.batches import Batches
    from pipeline.training.fit import pack_targets
    from pipeline.training.fused_batchnorm import fused_batchnorm
    from pipeline.training.losses import kd_loss

    keras.utils.set_random_seed(0)
    model = _build(model_name)
    if mode == "none":
        model = _without_batchnorm(model)
    rng = np.random.default_rng(0)
    x = rng.random((128 * 8, 28, 28, 1), dtype=np.float32)
    targets = pack_targets(rng.integers(0, 10, len(x)), 10)
    batches = Batches(x, targets, 128, seed=0, flip=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=kd_loss(10, 1.0, 1.0))
    times = []
    with fused_batchnorm(model) if mode == "fused" else contextlib.nullcontext():
        for step in range(steps + 3):
            bx, by = batches[step % len(batches)]
            started = time.perf_counter()
            model.train_on_batch(bx, by)
            if step >= 3:
                times.append(1000 * (time.perf_counter() - started))
    return {"model": model_name, "mode": mode, "median_ms": round(statistics.median(times), 1)}


def _cell_in_subprocess(model: str, mode: str, threads: int) -> dict[str, Any]:
    return dict(call_pinned(threads, __name__, "measure_cell", model, mode), threads=threads)


def run(progress: Progress | None = None) -> dict[str, Any]:
    progress = progress or NullProgress()
    cells = []
    with progress.task("timing training steps", total=len(MODELS) * len(MODES) * 2) as advance:
        for threads in (1, 2):
            for model in MODELS:
                for mode in MODES:
                    cells.append(_cell_in_subprocess(model, mode, threads))
                    advance(1)

    def ms(model: str, mode: str, threads: int) -> float:
        return next(c["median_ms"] for c in cells if (c["model"], c["mode"], c["threads"]) == (model, mode, threads))

    speedups = {
        f"{model}_{threads}t": round(ms(model, "keras", threads) / ms(model, "fused", threads), 2)
        for model in MODELS
        for threads in (1, 2)
    }
    payload = {
        "cells": cells,
        "fused_speedup": speedups,
        "batchnorm_share_keras": {f"{m}_{t}t": round(1 - ms(m, "none", t) / ms(m, "keras", t), 2) for m in MODELS for t in (1, 2)},
        "targets": {f"fused_not_slower_{key}": target(value, 1.0, True) for key, value in speedups.items()},
    }
    write_result("trainer", payload)
    return payload

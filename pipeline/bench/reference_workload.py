"""A fixed Keras training step, timed, so a bench can tell a slow machine from a slow recipe.

Wall times only compare on one host. Every bench that reports training time also runs this
workload in the same run, in a fresh one-thread process: the default student's architecture, batch 128 of fixed random
images, Adam, one thread, the same fused-BatchNorm training path the builds use. Dividing a build's
seconds by these milliseconds gives a figure that travels between machines far better than either.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from pipeline.bench.common import call_pinned

STEPS = 30
WARMUP_STEPS = 5
BATCH = 128


def measure_in_subprocess(steps: int = STEPS) -> dict[str, Any]:
    """:func:`measure` in a fresh process pinned to one thread (the bench's own TensorFlow is not)."""
    return call_pinned(1, __name__, "measure", steps)


def measure(steps: int = STEPS, family: str = "mobilenet_v1") -> dict[str, Any]:
    """Median and spread of ``steps`` timed training steps after ``WARMUP_STEPS`` untimed ones."""
    import keras
    import numpy as np
    import tensorflow as tf

    from pipeline.models.registry import build_student
    from pipeline.training.fused_batchnorm import fused_batchnorm

    threads = (tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
    keras.utils.set_random_seed(0)
    model = build_student(family, (28, 28, 1), 10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    seconds = []
    with fused_batchnorm(model):
        for step in range(WARMUP_STEPS + steps):
            started = time.perf_counter()
            model.train_on_batch(x, y)
            if step >= WARMUP_STEPS:
                seconds.append(time.perf_counter() - started)
    ms = sorted(1000 * s for s in seconds)
    return {
        "workload": f"{family} training step, batch {BATCH}, 28x28x1, Adam",
        "steps": steps,
        "median_ms": round(statistics.median(ms), 2),
        "p10_ms": round(ms[len(ms) // 10], 2),
        "p90_ms": round(ms[(9 * len(ms)) // 10], 2),
        "tensorflow_threads": {"intra_op": threads[0], "inter_op": threads[1]},
    }

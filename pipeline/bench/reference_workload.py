"""A fixed Keras training step, timed, so a bench can tell a slow machine from a slow recipe.

Wall times only compare on one host. Every bench that reports training time also runs this
workload in the same process: the default student's architecture, batch 128 of fixed random
images, Adam, one thread, the same fused-BatchNorm training path the builds use. Dividing a build's
seconds by these milliseconds gives a figure that travels between machines far better than either.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

STEPS = 30
WARMUP_STEPS = 5
BATCH = 128


def measure_in_subprocess(steps: int = STEPS) -> dict[str, Any]:
    """:func:`measure` in a fresh process pinned to one thread (the bench's own TensorFlow is not)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.bench.reference_workload", str(steps)], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"reference workload failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


if __name__ == "__main__":
    from pipeline.execute.local_pool import pin_tensorflow_threads

    pin_tensorflow_threads(1)
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else STEPS)))

"""Stages a cluster test can steer: they record where they ran, fail on demand or wait for a file.

They live in an importable module (not a test file) because Dask workers unpickle them by name.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel

from pipeline.errors import ConfigError
from pipeline.stages.base import Artifact, RunContext, Stage


class ProbeConfig(BaseModel):
    tag: str
    log: str = ""  # a file each start appends a line to: proves how often the task ran
    fail: bool = False
    wait_for: str = ""  # block (reporting progress) until this file exists
    seconds: float = 0.0  # report progress this long, then finish


class ProbeStage(Stage[ProbeConfig]):
    """Writes which process ran it, what it was given, and how many TensorFlow threads it had."""

    name = "probe"
    version = 1
    cores = 1
    inputs = ()

    def run(self, inputs: Mapping[str, Artifact], out: Path, ctx: RunContext) -> dict[str, Any]:
        cfg = self.config
        if cfg.log:
            with open(cfg.log, "a", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()}\n")
        if cfg.fail:
            raise ConfigError(f"probe {cfg.tag}: key 'fail' is set in the test's profile")
        deadline = time.monotonic() + (cfg.seconds or 120.0)
        with ctx.progress.task(f"probing {cfg.tag}", total=None) as advance:
            ctx.progress.detail(f"{cfg.tag} epoch 1: loss 1.0")
            while time.monotonic() < deadline:
                if cfg.wait_for and Path(cfg.wait_for).exists():
                    break
                advance(1)
                time.sleep(0.05)
        tf_threads = None
        if "tensorflow" in sys.modules:
            import tensorflow as tf

            tf_threads = tf.config.threading.get_intra_op_parallelism_threads()
        received = {name: sorted(p.name for p in artifact.path.iterdir()) for name, artifact in inputs.items()}
        (out / "ran.json").write_text(json.dumps({
            "pid": os.getpid(), "cache_root": str(ctx.root), "received": received,
            "tf_threads": tf_threads,
        }))
        (out / "payload.bin").write_bytes(cfg.tag.encode() * 1000)
        return {"tag": cfg.tag}


class ConsumerStage(ProbeStage):
    """A probe that needs an upstream probe's artifact, to show inputs travel with the task."""

    name = "consumer"
    inputs = ("upstream",)

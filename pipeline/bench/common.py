"""Shared benchmark plumbing: machine facts and atomic JSON output."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.clock import utc_now
from pipeline.fsutil import atomic_write_json
from pipeline.paths import results_dir


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"machine": platform.machine(), "cpu_model": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def write_result(name: str, payload: dict[str, Any]) -> Path:
    path = results_dir() / "bench" / f"{name}.json"
    payload = dict(payload, measured_at=utc_now("seconds"), host=machine())
    atomic_write_json(path, payload)
    return path


def target(value: float | None, limit: float, higher_is_better: bool) -> dict[str, Any]:
    met = None if value is None else (value >= limit if higher_is_better else value <= limit)
    return {"value": value, "limit": limit, "met": met}


def call_pinned(threads: int, module: str, function: str, *args: Any) -> dict[str, Any]:
    """``module.function(*args)`` in a fresh interpreter whose TensorFlow pools have ``threads``.

    TensorFlow sizes its pools once per process, so a timing at a given thread count needs its own
    process; the function returns a JSON-able dict, read back from the child's last stdout line.
    """
    code = (
        "import json; from pipeline.execute.local_pool import pin_tensorflow_threads; "
        f"pin_tensorflow_threads({int(threads)}); from {module} import {function}; "
        f"print(json.dumps({function}(*{list(args)!r})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{module}.{function}{tuple(args)} on {threads} thread(s) failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])

"""Shared benchmark plumbing: machine facts and atomic JSON output."""

from __future__ import annotations

import os
import platform
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

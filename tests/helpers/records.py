"""Realistic profile records (device_agents/README.md, schema_version 1) with synthetic samples."""

from __future__ import annotations

import datetime as _dt
import importlib.util
from typing import Any, Optional, Sequence

import numpy as np

from pipeline.paths import agent_path


def latency_samples(seed: int, n: int = 200, median_ms: float = 12.0, sigma: float = 0.08, spike_rate: float = 0.02) -> np.ndarray:
    """Latency-like samples: lognormal around ``median_ms`` plus rare 1.5-3x scheduler spikes,
    rounded to nanoseconds as the agent does (so ties are possible)."""
    rng = np.random.default_rng(seed)
    samples = median_ms * rng.lognormal(0.0, sigma, n)
    spikes = rng.random(n) < spike_rate
    samples[spikes] *= rng.uniform(1.5, 3.0, spikes.sum())
    return np.round(samples, 6)


def _percentile(ordered: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(ordered), q))


def _load_agent():
    """The real device agent as a module, so records use its throttling decoder, not a copy."""
    spec = importlib.util.spec_from_file_location("edgeship_device_agent", agent_path())
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


throttling_word = _load_agent().decode_throttled


def make_record(
    samples: Sequence[float],
    *,
    bundle_id: str = "0123456789abcdef",
    profile: str = "default",
    target: str = "rpi4-a",
    top1: float = 0.87,
    count: int = 200,
    agreement: Optional[float] = 0.995,
    peak_rss_mb: float = 48.5,
    emulated: bool = False,
    throttled: int = 0,
    temperature_c: Optional[float] = 55.2,
    threads: int = 4,
    runtime_version: str = "2.14.0",
    energy: Any = "absent",
) -> dict[str, Any]:
    """``energy``: leave it out (a record from before energy estimates, the default), a float (mJ per
    inference: a Pi 5's estimate), or ``None`` (an agent that says why it could not tell)."""
    samples = [round(float(s), 6) for s in samples]
    ordered = sorted(samples)
    arr = np.asarray(samples)
    start = _dt.datetime(2026, 11, 25, 2, 0, tzinfo=_dt.timezone.utc)
    correct = int(round(top1 * count))
    disagreements = []
    if agreement is not None:
        for i in range(int(round((1 - agreement) * count))):
            disagreements.append({"index": i, "label": i % 10, "host": i % 10, "device": (i + 1) % 10})
    record = {
        "schema_version": 1,
        "bundle_id": bundle_id,
        "profile": profile,
        "target": target,
        "started_at": start.isoformat(),
        "finished_at": (start + _dt.timedelta(seconds=float(arr.sum()) / 1000 + 3)).isoformat(),
        "device": {
            "hostname": target,
            "machine": "aarch64",
            "cpu_model": "Cortex-A72",
            "cores": 4,
            "governor": "performance",
            "frequency_mhz": 1500.0,
            "temperature_c": temperature_c,
            "throttling": None if emulated else throttling_word(throttled),
            "os": "Debian GNU/Linux 12 (bookworm)",
            "python": "3.11.2",
            "emulated": emulated,
        },
        "runtime": {
            "name": "tflite_runtime",
            "version": runtime_version,
            "numpy": "1.24.2",
            "threads_requested": threads,
            "threads_used": threads,
            "delegate": "xnnpack",
        },
        "latency_ms": {
            "init": 35.2,
            "first": round(ordered[-1] * 1.5, 6),
            "warmup_count": 5,
            "samples": samples,
            "count": len(samples),
            "mean": round(float(arr.mean()), 6),
            "std": round(float(arr.std(ddof=1)), 6) if len(samples) > 1 else 0.0,
            "min": ordered[0],
            "max": ordered[-1],
            "p50": round(_percentile(ordered, 50), 6),
            "p90": round(_percentile(ordered, 90), 6),
            "p95": round(_percentile(ordered, 95), 6),
            "p99": round(_percentile(ordered, 99), 6),
        },
        "memory": {"peak_rss_mb": peak_rss_mb, "baseline_rss_mb": 31.0},
        "accuracy": {
            "top1": correct / count,
            "count": count,
            "agreement_with_host": agreement,
            "disagreements": disagreements,
        },
        "benchmark_model": None,
        "warnings": (["Measured under emulation (--emulated): latencies do not represent the real device."] if emulated else []),
    }
    if energy is None:
        record.update(energy=None, energy_unavailable="no vcgencmd on PATH (not a Raspberry Pi, or its firmware tools are missing)")
    elif energy != "absent":
        record.update(energy=energy_object(float(energy), float(arr.sum()) / 1000, len(samples)), energy_unavailable=None)
    return record


def energy_object(mj_per_inference: float, seconds: float, invokes: int, idle_power_w: float = 2.5) -> dict[str, Any]:
    """The agent's ``energy`` object for a Pi 5 whose model adds ``mj_per_inference`` above idle."""
    load = idle_power_w + mj_per_inference * invokes / 1000 / seconds
    return {
        "mj_per_inference": mj_per_inference, "gross_mj_per_inference": round(load * seconds / invokes * 1000, 6),
        "load_power_w": round(load, 6), "idle_power_w": idle_power_w, "samples": max(1, int(seconds / 0.15)),
        "idle_samples": 3, "failed_samples": 0, "seconds": round(seconds, 6), "invokes": invokes, "estimated": True,
        "source": "vcgencmd pmic_read_adc",
    }

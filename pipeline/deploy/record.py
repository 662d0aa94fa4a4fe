"""The agent's profile record, parsed once where it is fetched and read by attribute everywhere else.

The record's JSON (``device_agents/README.md``, ``docs/ARCHITECTURE.md``) comes from a device,
so nothing in it is trusted: a field of the wrong type reads as ``None`` here, and
:meth:`ProfileRecord.invalid_reasons` says why such a record must not be compared. Parsing
never drops the JSON: :attr:`ProfileRecord.raw` is what is stored and shown with ``--json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

RECORD_SCHEMA_VERSION = 1
DEFAULT_MAX_TEMPERATURE_C = 80.0
# Throttling bits that describe the state *now* (the agent reads them right after the timed loop).
# The sticky ever_* bits only say it happened at some point since boot and do not invalidate a run.
THROTTLING_NOW = ("throttled", "frequency_capped", "soft_temp_limit", "under_voltage")


def finite_number(value: Any) -> bool:
    """A real int or float that is not NaN or infinite (``True`` is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(data: Mapping[str, Any], key: str) -> Optional[float]:
    value = data.get(key)
    return float(value) if finite_number(value) else None


def _int(data: Mapping[str, Any], key: str) -> Optional[int]:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(data: Mapping[str, Any], key: str) -> Optional[str]:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def _obj(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class Latency:
    """Milliseconds; ``samples`` are the timed invocations in order, empty if unusable."""

    p50: Optional[float] = None
    p90: Optional[float] = None
    p95: Optional[float] = None
    p99: Optional[float] = None
    mean: Optional[float] = None
    std: Optional[float] = None
    min: Optional[float] = None
    max: Optional[float] = None
    init: Optional[float] = None
    first: Optional[float] = None
    count: Optional[int] = None
    warmup_count: Optional[int] = None
    samples: tuple[float, ...] = ()
    samples_problem: Optional[str] = "the record has no latency_ms object"

    @classmethod
    def parse(cls, data: Any) -> "Latency":
        if not isinstance(data, Mapping):
            return cls()
        samples, problem = data.get("samples"), None
        if not isinstance(samples, list) or not samples:
            samples, problem = (), "latency_ms.samples is missing or empty"
        elif not all(finite_number(s) and s >= 0 for s in samples):
            samples, problem = (), "latency_ms.samples holds a value that is not a finite, non-negative number"
        values = {key: _num(data, key) for key in ("p50", "p90", "p95", "p99", "mean", "std", "min", "max", "init", "first")}
        return cls(
            **values, count=_int(data, "count"), warmup_count=_int(data, "warmup_count"),
            samples=tuple(float(s) for s in samples), samples_problem=problem,
        )


@dataclass(frozen=True)
class Memory:
    peak_rss_mb: Optional[float] = None
    baseline_rss_mb: Optional[float] = None

    @classmethod
    def parse(cls, data: Any) -> "Memory":
        data = data if isinstance(data, Mapping) else {}
        return cls(peak_rss_mb=_num(data, "peak_rss_mb"), baseline_rss_mb=_num(data, "baseline_rss_mb"))


@dataclass(frozen=True)
class Energy:
    """The agent's PMIC estimate (``energy``): only boards that can tell (a Raspberry Pi 5) send one.

    ``mj_per_inference`` is ``(load_power_w - idle_power_w) x seconds / invokes`` in mJ: the energy
    the model adds above the idle board, the number the regression check compares.
    """

    mj_per_inference: float
    load_power_w: Optional[float] = None
    idle_power_w: Optional[float] = None
    gross_mj_per_inference: Optional[float] = None
    samples: Optional[int] = None
    idle_samples: Optional[int] = None
    source: Optional[str] = None
    estimated: bool = True

    @classmethod
    def parse(cls, data: Any) -> Optional["Energy"]:
        """None for a record without a usable estimate (no object, or no finite mJ per inference)."""
        if not isinstance(data, Mapping) or _num(data, "mj_per_inference") is None:
            return None
        return cls(
            mj_per_inference=float(data["mj_per_inference"]), load_power_w=_num(data, "load_power_w"),
            idle_power_w=_num(data, "idle_power_w"), gross_mj_per_inference=_num(data, "gross_mj_per_inference"),
            samples=_int(data, "samples"), idle_samples=_int(data, "idle_samples"), source=_str(data, "source"),
            estimated=data.get("estimated") is not False,
        )


@dataclass(frozen=True)
class Accuracy:
    """Top-1 on the bundle's eval subset, and image-by-image agreement with the host's predictions."""

    top1: Optional[float] = None
    count: Optional[int] = None
    agreement_with_host: Optional[float] = None
    disagreements: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def parse(cls, data: Any) -> "Accuracy":
        data = data if isinstance(data, Mapping) else {}
        rows = data.get("disagreements")
        return cls(
            top1=_num(data, "top1"), count=_int(data, "count"), agreement_with_host=_num(data, "agreement_with_host"),
            disagreements=tuple(r for r in rows if isinstance(r, Mapping)) if isinstance(rows, list) else (),
        )


@dataclass(frozen=True)
class RuntimeInfo:
    name: Optional[str] = None
    version: Optional[str] = None
    numpy: Optional[str] = None
    threads_requested: Optional[int] = None
    threads_used: Optional[int] = None
    delegate: Optional[str] = None

    @classmethod
    def parse(cls, data: Any) -> "RuntimeInfo":
        data = data if isinstance(data, Mapping) else {}
        return cls(
            name=_str(data, "name"), version=_str(data, "version"), numpy=_str(data, "numpy"),
            threads_requested=_int(data, "threads_requested"), threads_used=_int(data, "threads_used"),
            delegate=_str(data, "delegate"),
        )

    def differences(self, other: "RuntimeInfo") -> list[tuple[str, Any, Any]]:
        """``(field, self's value, other's value)`` for what makes two latencies hard to compare."""
        keys = ("name", "version", "threads_used", "delegate")
        return [(k, getattr(self, k), getattr(other, k)) for k in keys if getattr(self, k) != getattr(other, k)]


@dataclass(frozen=True)
class DeviceInfo:
    """What the agent could read about the board; every field may be unknown (``None``)."""

    hostname: Optional[str] = None
    machine: Optional[str] = None
    cpu_model: Optional[str] = None
    cores: Optional[int] = None
    governor: Optional[str] = None
    frequency_mhz: Optional[float] = None
    temperature_c: Optional[float] = None
    os: Optional[str] = None
    python: Optional[str] = None
    emulated: bool = False
    throttling: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any) -> "DeviceInfo":
        data = data if isinstance(data, Mapping) else {}
        return cls(
            hostname=_str(data, "hostname"), machine=_str(data, "machine"), cpu_model=_str(data, "cpu_model"),
            cores=_int(data, "cores"), governor=_str(data, "governor"), frequency_mhz=_num(data, "frequency_mhz"),
            temperature_c=_num(data, "temperature_c"), os=_str(data, "os"), python=_str(data, "python"),
            emulated=data.get("emulated") is True, throttling=_obj(data, "throttling"),
        )

    @property
    def throttled_now(self) -> list[str]:
        """The throttling flags that were set when the agent read them (empty if none or unknown)."""
        return [flag for flag in THROTTLING_NOW if self.throttling.get(flag) is True]


def _energy_unavailable(data: Mapping[str, Any]) -> Optional[str]:
    """Why the record has no energy: the agent's reason, or one of ours for an unusable object."""
    reason = _str(data, "energy_unavailable")
    if reason or Energy.parse(data.get("energy")) is not None:
        return reason
    if "energy" not in data:
        return "the agent that measured this predates energy estimates"
    if data.get("energy") is not None:
        return "the record's energy object has no finite mj_per_inference"
    return "the record has no energy estimate and gives no reason"


@dataclass(frozen=True)
class ProfileRecord:
    """One ``profile`` run of the agent on one device."""

    raw: Mapping[str, Any]
    schema_version: Any = None  # kept as sent, so a wrong version can be reported as it was
    bundle_id: Optional[str] = None
    profile: Optional[str] = None
    target: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    device: DeviceInfo = field(default_factory=DeviceInfo)
    runtime: RuntimeInfo = field(default_factory=RuntimeInfo)
    latency: Latency = field(default_factory=Latency)
    memory: Memory = field(default_factory=Memory)
    accuracy: Accuracy = field(default_factory=Accuracy)
    benchmark_model: Optional[Mapping[str, Any]] = None
    warnings: tuple[str, ...] = ()
    # None when the device could not tell (energy_unavailable says why) or the agent predates energy.
    energy: Optional[Energy] = None
    energy_unavailable: Optional[str] = None

    @classmethod
    def parse(cls, data: Any) -> "ProfileRecord":
        """Read a record's JSON object; raises ValueError only when it is not an object at all."""
        if isinstance(data, ProfileRecord):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(f"a profile record must be a JSON object, not {type(data).__name__}")
        warnings = data.get("warnings")
        benchmark = data.get("benchmark_model")
        return cls(
            raw=dict(data), schema_version=data.get("schema_version"), bundle_id=_str(data, "bundle_id"),
            profile=_str(data, "profile"), target=_str(data, "target"), started_at=_str(data, "started_at"),
            finished_at=_str(data, "finished_at"), device=DeviceInfo.parse(data.get("device")),
            runtime=RuntimeInfo.parse(data.get("runtime")), latency=Latency.parse(data.get("latency_ms")),
            memory=Memory.parse(data.get("memory")), accuracy=Accuracy.parse(data.get("accuracy")),
            benchmark_model=benchmark if isinstance(benchmark, Mapping) else None,
            warnings=tuple(str(w) for w in warnings) if isinstance(warnings, list) else (),
            energy=Energy.parse(data.get("energy")), energy_unavailable=_energy_unavailable(data),
        )

    def to_json(self) -> dict[str, Any]:
        """The record exactly as the agent wrote it (a copy)."""
        return dict(self.raw)

    def samples(self) -> np.ndarray:
        """The timed latency samples as float64; raises ValueError when there are none usable."""
        if self.latency.samples_problem:
            raise ValueError(self.latency.samples_problem)
        return np.asarray(self.latency.samples, dtype=np.float64)

    @property
    def throttled_now(self) -> list[str]:
        return self.device.throttled_now

    def invalid_reasons(self, *, max_temperature_c: float = DEFAULT_MAX_TEMPERATURE_C) -> list[str]:
        """Why this record must not be compared with anything (empty list: it is usable).

        Malformed (wrong schema version, no bundle id, no usable latency samples), throttling,
        frequency capping, the soft temperature limit or under-voltage at the time of measurement,
        or a CPU hotter than ``max_temperature_c``.
        """
        reasons: list[str] = []
        if self.schema_version != RECORD_SCHEMA_VERSION or isinstance(self.schema_version, bool):
            reasons.append(
                f"profile record schema_version is {self.schema_version!r}, this edgeship reads {RECORD_SCHEMA_VERSION}"
            )
        if self.bundle_id is None:
            reasons.append("profile record has no bundle_id")
        if self.latency.samples_problem:
            reasons.append(f"profile record is unusable: {self.latency.samples_problem}")
        flags = self.throttled_now
        if flags:
            raw = self.device.throttling.get("raw")
            reasons.append(
                "device reported " + ", ".join(f.replace("_", " ") for f in flags)
                + (f" (get_throttled={raw})" if raw else "") + " during the run; latency is not representative"
            )
        temperature = self.device.temperature_c
        if temperature is not None and temperature > max_temperature_c:
            reasons.append(
                f"CPU temperature {temperature:.1f} °C is above the {max_temperature_c:.1f} °C limit; latency is not representative"
            )
        return reasons

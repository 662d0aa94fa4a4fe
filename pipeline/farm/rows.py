"""What the results store hands back: one frozen dataclass per table row, and its errors.

Kept apart from the queries so the regression check and the reports can name a :class:`Result` or
:class:`Run` without the SQL that produces them.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Optional

from pipeline.deploy.record import ProfileRecord
from pipeline.errors import EdgeshipError


class StoreError(EdgeshipError):
    """The results store is unusable or a request names a run/result that does not exist."""


class BaselineExistsError(StoreError):
    """Accepting a baseline would silently replace an existing one."""


@dataclass(frozen=True)
class Run:
    id: int
    kind: str
    started_at: str
    finished_at: Optional[str]
    status: str
    inventory: Optional[str]
    profile_name: Optional[str]
    info: dict[str, Any] = field(default_factory=dict)
    host: Optional[str] = None
    pid: Optional[int] = None
    heartbeat_at: Optional[str] = None


@dataclass(frozen=True)
class Result:
    id: int
    run_id: int
    device: str
    device_class: Optional[str]
    bundle_id: Optional[str]
    profile_name: Optional[str]
    status: str
    error: Optional[str]
    record_path: Optional[str]
    record: Optional[ProfileRecord]
    p50: Optional[float]
    mean: Optional[float]
    peak_rss_mb: Optional[float]
    top1: Optional[float]
    agreement: Optional[float]
    throttled: bool
    emulated: bool
    created: str
    # The record's energy estimate (None: the device could not tell, or the row predates energy).
    energy_mj_per_inference: Optional[float] = None
    power_w: Optional[float] = None
    idle_power_w: Optional[float] = None

    @property
    def comparable(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Baseline:
    device_key: str
    profile_name: str
    result_id: int
    accepted_at: str
    result: Result


@dataclass(frozen=True)
class Device:
    name: str
    target_file: Optional[str]
    device_class: Optional[str]
    tags: list[str]
    emulated: bool
    last_seen: Optional[str]


@dataclass(frozen=True)
class NoiseFloor:
    device: str
    profile_name: str
    floor: float
    n_runs: int
    updated: str


# The SELECT lists the converters below read, in table order.
RESULT_COLUMNS = (
    "id, run_id, device, device_class, bundle_id, profile_name, status, error, record_path, record, "
    "p50, mean, peak_rss_mb, top1, agreement, throttled, emulated, created, energy_mj_per_inference, power_w, idle_power_w"
)
RUN_COLUMNS = "id, kind, started_at, finished_at, status, inventory, profile_name, info, host, pid, heartbeat_at"


def result_from_row(row: sqlite3.Row) -> Result:
    return Result(
        id=row["id"], run_id=row["run_id"], device=row["device"], device_class=row["device_class"],
        bundle_id=row["bundle_id"], profile_name=row["profile_name"], status=row["status"], error=row["error"],
        record_path=row["record_path"], record=ProfileRecord.parse(json.loads(row["record"])) if row["record"] else None,
        p50=row["p50"], mean=row["mean"], peak_rss_mb=row["peak_rss_mb"], top1=row["top1"],
        agreement=row["agreement"], throttled=bool(row["throttled"]), emulated=bool(row["emulated"]),
        created=row["created"], energy_mj_per_inference=row["energy_mj_per_inference"], power_w=row["power_w"],
        idle_power_w=row["idle_power_w"],
    )


def run_from_row(row: sqlite3.Row) -> Run:
    return Run(
        id=row["id"], kind=row["kind"], started_at=row["started_at"], finished_at=row["finished_at"],
        status=row["status"], inventory=row["inventory"], profile_name=row["profile_name"],
        info=json.loads(row["info"] or "{}"), host=row["host"], pid=row["pid"], heartbeat_at=row["heartbeat_at"],
    )

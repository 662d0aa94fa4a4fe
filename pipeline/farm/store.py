"""The results store: one SQLite database holding every farm and profile run, ever.

Default location ``results/results.sqlite`` (``results_dir()``, so ``$EDGESHIP_RESULTS`` moves it).

Durability and concurrency
--------------------------
* WAL journal, ``synchronous=FULL``, ``busy_timeout`` 30 s, foreign keys on.
* Every logical write (start a run, record one result with all its latency samples, accept a
  baseline, ...) is one ``BEGIN IMMEDIATE`` transaction. A process killed at any moment therefore
  leaves either the whole result (row + samples) or nothing, and everything committed before stays.
  ``BEGIN IMMEDIATE`` takes the write lock up front, so two processes (farm shards) writing at the
  same time queue on ``busy_timeout`` instead of failing on a read-to-write lock upgrade.
* One connection per ``ResultsStore``, guarded by a lock, so the farm runner may share a store
  between threads. Separate processes open their own ``ResultsStore``.
* A run left ``running`` by a killed process is closed with :meth:`ResultsStore.mark_stale_runs_aborted`.

Schema (version 1; ``schema_version`` holds the applied version, :data:`MIGRATIONS` the steps)
-----------------------------------------------------------------------------------------------
runs       id, kind farm|profile, started_at, finished_at, status running|finished|aborted,
           inventory, profile_name, info (json: git commit, tool versions), host, pid, pid_start,
           heartbeat_at
devices    name PK, target_file, device_class, tags (json), emulated, last_seen
bundles    bundle_id PK, profile_name, manifest (json or NULL until registered), created
results    id, run_id -> runs, device, device_class, bundle_id -> bundles, profile_name,
           status ok|unreachable|failed|timeout|invalid, error, record_path, record (json), p50,
           mean, peak_rss_mb, top1, agreement, throttled, emulated, created
samples    result_id -> results, idx, latency_ms           (raw timed samples, PK(result_id, idx))
baselines  device_key (device name or device class), profile_name, result_id -> results,
           accepted_at, PK(device_key, profile_name)
noise      device, profile_name, floor, n_runs, updated    (PK(device, profile_name))
verdicts   run_id -> runs, result_id -> results, verdict (json), created   (PK(run_id, result_id))
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import socket
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from pipeline.deploy.record import DEFAULT_MAX_TEMPERATURE_C, ProfileRecord
from pipeline.errors import EdgeshipError
from pipeline.paths import PROJECT_ROOT
from pipeline.proc_identity import pid_alive, start_ticks
from pipeline.sqlite_store import SQLiteStore

SCHEMA_VERSION = 1
RUN_KINDS = ("farm", "profile")
RUN_STATUSES = ("running", "finished", "aborted")
RESULT_STATUSES = ("ok", "unreachable", "failed", "timeout", "invalid")
DEFAULT_STALE_AFTER_S = 24 * 3600.0


class StoreError(EdgeshipError):
    """The results store is unusable or a request names a run/result that does not exist."""


class BaselineExistsError(StoreError):
    """Accepting a baseline would silently replace an existing one."""


_SCHEMA_V1 = """
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('farm', 'profile')),
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    status        TEXT NOT NULL CHECK (status IN ('running', 'finished', 'aborted')),
    inventory     TEXT,
    profile_name  TEXT,
    info          TEXT NOT NULL DEFAULT '{}',
    host          TEXT,
    pid           INTEGER,
    pid_start     TEXT,
    heartbeat_at  TEXT
);
CREATE INDEX runs_status ON runs(status);

CREATE TABLE devices (
    name          TEXT PRIMARY KEY,
    target_file   TEXT,
    device_class  TEXT,
    tags          TEXT NOT NULL DEFAULT '[]',
    emulated      INTEGER NOT NULL DEFAULT 0,
    last_seen     TEXT
);

CREATE TABLE bundles (
    bundle_id     TEXT PRIMARY KEY,
    profile_name  TEXT,
    manifest      TEXT,
    created       TEXT
);

CREATE TABLE results (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs(id),
    device        TEXT NOT NULL,
    device_class  TEXT,
    bundle_id     TEXT REFERENCES bundles(bundle_id),
    profile_name  TEXT,
    status        TEXT NOT NULL CHECK (status IN ('ok', 'unreachable', 'failed', 'timeout', 'invalid')),
    error         TEXT,
    record_path   TEXT,
    record        TEXT,
    p50           REAL,
    mean          REAL,
    peak_rss_mb   REAL,
    top1          REAL,
    agreement     REAL,
    throttled     INTEGER NOT NULL DEFAULT 0,
    emulated      INTEGER NOT NULL DEFAULT 0,
    created       TEXT NOT NULL
);
CREATE INDEX results_run ON results(run_id);
CREATE INDEX results_history ON results(device, profile_name, id);

CREATE TABLE samples (
    result_id     INTEGER NOT NULL REFERENCES results(id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL,
    latency_ms    REAL NOT NULL,
    PRIMARY KEY (result_id, idx)
) WITHOUT ROWID;

CREATE TABLE baselines (
    device_key    TEXT NOT NULL,
    profile_name  TEXT NOT NULL,
    result_id     INTEGER NOT NULL REFERENCES results(id),
    accepted_at   TEXT NOT NULL,
    PRIMARY KEY (device_key, profile_name)
);

CREATE TABLE noise (
    device        TEXT NOT NULL,
    profile_name  TEXT NOT NULL,
    floor         REAL NOT NULL,
    n_runs        INTEGER NOT NULL,
    updated       TEXT NOT NULL,
    PRIMARY KEY (device, profile_name)
);

CREATE TABLE verdicts (
    run_id        INTEGER NOT NULL REFERENCES runs(id),
    result_id     INTEGER NOT NULL REFERENCES results(id),
    verdict       TEXT NOT NULL,
    created       TEXT NOT NULL,
    PRIMARY KEY (run_id, result_id)
);
"""

# (version, SQL script). Append new steps; never edit a released one.
MIGRATIONS: list[tuple[int, str]] = [(1, _SCHEMA_V1)]


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def _parse_time(text: Optional[str]) -> Optional[_dt.datetime]:
    if not text:
        return None
    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)


def _process_start(pid: int) -> Optional[str]:
    """Start time of ``pid`` as the store keeps it (TEXT), to tell a live pid from a reused one."""
    ticks = start_ticks(pid)
    return None if ticks is None else str(ticks)


def _pid_alive(pid: int, pid_start: Optional[str]) -> bool:
    return pid_alive(pid, int(pid_start) if pid_start and pid_start.isdigit() else None)


def tool_info() -> dict[str, Any]:
    """What produced a run: edgeship version, Python, numpy, git commit (when in a checkout)."""
    from pipeline import __version__

    info: dict[str, Any] = {
        "edgeship": __version__,
        "python": ".".join(str(v) for v in __import__("sys").version_info[:3]),
        "numpy": np.__version__,
        "sqlite": sqlite3.sqlite_version,
        "git_commit": None,
        "git_dirty": None,
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        )
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5,
            )
            info["git_dirty"] = bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# ------------------------------------------------------------------------------------ row types


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


_RESULT_COLUMNS = (
    "id, run_id, device, device_class, bundle_id, profile_name, status, error, record_path, record, "
    "p50, mean, peak_rss_mb, top1, agreement, throttled, emulated, created"
)
_RUN_COLUMNS = "id, kind, started_at, finished_at, status, inventory, profile_name, info, host, pid, heartbeat_at"


def _result(row: sqlite3.Row) -> Result:
    return Result(
        id=row["id"], run_id=row["run_id"], device=row["device"], device_class=row["device_class"],
        bundle_id=row["bundle_id"], profile_name=row["profile_name"], status=row["status"], error=row["error"],
        record_path=row["record_path"], record=ProfileRecord.parse(json.loads(row["record"])) if row["record"] else None,
        p50=row["p50"], mean=row["mean"], peak_rss_mb=row["peak_rss_mb"], top1=row["top1"],
        agreement=row["agreement"], throttled=bool(row["throttled"]), emulated=bool(row["emulated"]),
        created=row["created"],
    )


def _run(row: sqlite3.Row) -> Run:
    return Run(
        id=row["id"], kind=row["kind"], started_at=row["started_at"], finished_at=row["finished_at"],
        status=row["status"], inventory=row["inventory"], profile_name=row["profile_name"],
        info=json.loads(row["info"] or "{}"), host=row["host"], pid=row["pid"], heartbeat_at=row["heartbeat_at"],
    )


# ----------------------------------------------------------------------------------- the store


class ResultsStore(SQLiteStore):
    """Open (creating or migrating as needed) the results database at ``path``.

    ``path`` defaults to ``results_dir()/"results.sqlite"``. Use as a context manager or call
    :meth:`close`.
    """

    file_name = "results.sqlite"
    what = "Results store"
    error = StoreError

    def __enter__(self) -> "ResultsStore":
        return self

    def _migrate(self) -> None:
        with self._write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"Results store {self.path} has schema version {current}, newer than this edgeship "
                    f"understands ({SCHEMA_VERSION}); upgrade edgeship or point $EDGESHIP_RESULTS elsewhere."
                )
            for version, script in MIGRATIONS:
                if version > current:
                    # executescript() would COMMIT our transaction; run statement by statement instead.
                    for statement in (s.strip() for s in script.split(";")):
                        if statement:
                            conn.execute(statement)
                    conn.execute("DELETE FROM schema_version")
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def schema_version(self) -> int:
        return int(self._read("SELECT max(version) FROM schema_version")[0][0])

    def integrity_check(self) -> str:
        """``'ok'`` or SQLite's description of the damage."""
        rows = self._read("PRAGMA integrity_check")
        return "; ".join(str(r[0]) for r in rows)

    # -- runs ----------------------------------------------------------------------------------

    def start_run(
        self,
        kind: str,
        inventory: Optional[str] = None,
        profile_name: Optional[str] = None,
        info: Optional[Mapping[str, Any]] = None,
    ) -> int:
        """Open a run (status 'running') and return its id. ``info`` defaults to :func:`tool_info`."""
        if kind not in RUN_KINDS:
            raise ValueError(f"run kind must be one of {RUN_KINDS}, not {kind!r}")
        info = dict(tool_info() if info is None else info)
        now = utc_now()
        pid = os.getpid()
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO runs (kind, started_at, status, inventory, profile_name, info, host, pid, pid_start, heartbeat_at)"
                " VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (kind, now, inventory, profile_name, json.dumps(info, sort_keys=True, default=str),
                 socket.gethostname(), pid, _process_start(pid), now),
            )
            return int(cursor.lastrowid)

    def finish_run(self, run_id: int, status: str = "finished") -> None:
        if status not in ("finished", "aborted"):
            raise ValueError(f"a run finishes as 'finished' or 'aborted', not {status!r}")
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?", (status, utc_now(), run_id)
            )
            if cursor.rowcount == 0:
                raise StoreError(f"Results store {self.path} has no run {run_id}.")

    def heartbeat(self, run_id: int) -> None:
        """Say the run is alive (recording a result does this too); see :meth:`mark_stale_runs_aborted`."""
        with self._write() as conn:
            conn.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (utc_now(), run_id))

    def get_run(self, run_id: int) -> Run:
        rows = self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise StoreError(f"Results store {self.path} has no run {run_id}; `edgeship runs` lists the recorded runs.")
        return _run(rows[0])

    def list_runs(self, limit: int = 50, kind: Optional[str] = None) -> list[Run]:
        """Most recent first."""
        where, params = ("WHERE kind = ?", [kind]) if kind else ("", [])
        rows = self._read(f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [_run(r) for r in rows]

    def mark_stale_runs_aborted(self, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> list[int]:
        """Close runs left 'running' by a process that is gone; returns their ids.

        A run is stale when it was started on this host by a process that no longer exists (pid
        and its start time are recorded, so a reused pid is not mistaken for the runner), or, from
        any host, when it has not recorded anything for ``stale_after_s`` seconds. Runs of live
        processes (e.g. another farm shard) are left alone. Their results stay in the store.
        """
        host = socket.gethostname()
        now = _dt.datetime.now(_dt.timezone.utc)
        stale: list[int] = []
        with self._write() as conn:
            rows = conn.execute(
                "SELECT id, host, pid, pid_start, heartbeat_at, started_at FROM runs WHERE status = 'running'"
            ).fetchall()
            for row in rows:
                dead = row["host"] == host and row["pid"] is not None and not _pid_alive(row["pid"], row["pid_start"])
                last = _parse_time(row["heartbeat_at"]) or _parse_time(row["started_at"])
                silent = last is not None and (now - last).total_seconds() > stale_after_s
                if dead or silent:
                    stale.append(row["id"])
            for run_id in stale:
                conn.execute(
                    "UPDATE runs SET status = 'aborted', finished_at = ? WHERE id = ? AND status = 'running'",
                    (utc_now(), run_id),
                )
        return stale

    # -- devices and bundles -------------------------------------------------------------------

    def register_device(
        self,
        name: str,
        device_class: Optional[str] = None,
        *,
        target_file: Optional[Union[str, Path]] = None,
        tags: Iterable[str] = (),
        emulated: bool = False,
    ) -> None:
        with self._write() as conn:
            self._upsert_device(conn, name, device_class, target_file, list(tags), emulated, seen=False)

    @staticmethod
    def _upsert_device(conn, name, device_class, target_file, tags, emulated, *, seen: bool) -> None:
        conn.execute(
            "INSERT INTO devices (name, target_file, device_class, tags, emulated, last_seen) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET"
            "  target_file = coalesce(excluded.target_file, devices.target_file),"
            "  device_class = coalesce(excluded.device_class, devices.device_class),"
            "  tags = CASE WHEN excluded.tags = '[]' THEN devices.tags ELSE excluded.tags END,"
            "  emulated = excluded.emulated,"
            "  last_seen = coalesce(excluded.last_seen, devices.last_seen)",
            (name, str(target_file) if target_file is not None else None, device_class,
             json.dumps(sorted(tags)), int(bool(emulated)), utc_now() if seen else None),
        )

    def get_device(self, name: str) -> Optional[Device]:
        rows = self._read("SELECT * FROM devices WHERE name = ?", (name,))
        if not rows:
            return None
        r = rows[0]
        return Device(r["name"], r["target_file"], r["device_class"], json.loads(r["tags"]), bool(r["emulated"]), r["last_seen"])

    def register_bundle(self, manifest: Mapping[str, Any]) -> None:
        """Remember a bundle's manifest (results may already reference the bundle id)."""
        bundle_id = manifest.get("bundle_id")
        if not bundle_id:
            raise ValueError("manifest has no bundle_id")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO bundles (bundle_id, profile_name, manifest, created) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(bundle_id) DO UPDATE SET profile_name = excluded.profile_name,"
                " manifest = excluded.manifest, created = coalesce(excluded.created, bundles.created)",
                (bundle_id, manifest.get("profile"), json.dumps(manifest, sort_keys=True, default=str), manifest.get("created")),
            )

    def get_bundle_manifest(self, bundle_id: str) -> Optional[dict[str, Any]]:
        rows = self._read("SELECT manifest FROM bundles WHERE bundle_id = ?", (bundle_id,))
        return json.loads(rows[0]["manifest"]) if rows and rows[0]["manifest"] else None

    # -- results -------------------------------------------------------------------------------

    def record_result(
        self,
        run_id: int,
        device: str,
        device_class: Optional[str],
        profile_name: Optional[str],
        status: str,
        record: Union[ProfileRecord, Mapping[str, Any], None],
        record_path: Union[str, Path, None],
        error: Optional[str] = None,
        *,
        emulated: Optional[bool] = None,
        target_file: Union[str, Path, None] = None,
        tags: Iterable[str] = (),
        max_temperature_c: float = DEFAULT_MAX_TEMPERATURE_C,
    ) -> int:
        """Store one device's outcome in one transaction (result row + all samples); returns its id.

        ``status`` is what the runner observed: 'ok' (``record`` required), 'unreachable',
        'failed' or 'timeout' (``error`` says why; a partial ``record`` may be given). An 'ok'
        record that :meth:`ProfileRecord.invalid_reasons` rejects (throttled, too hot, malformed) is stored as
        'invalid' with the reasons in ``error``: kept for the record, never compared.
        """
        if status not in RESULT_STATUSES:
            raise ValueError(f"result status must be one of {RESULT_STATUSES}, not {status!r}")
        if status == "ok" and record is None:
            raise ValueError("an 'ok' result needs its profile record")
        rec = ProfileRecord.parse(record) if record is not None else None
        samples = rec.latency.samples if rec is not None and not rec.latency.samples_problem else None
        if status == "ok":
            reasons = rec.invalid_reasons(max_temperature_c=max_temperature_c)
            if reasons:
                status = "invalid"
                error = "; ".join(([error] if error else []) + reasons)
        elif status == "invalid" and not error:
            reasons = rec.invalid_reasons(max_temperature_c=max_temperature_c) if rec is not None else []
            error = "; ".join(reasons) or None

        latency = rec.latency if rec is not None else None
        # Either the record or the caller saying "emulated" wins: never pass emulation off as hardware.
        is_emulated = (rec is not None and rec.device.emulated) or bool(emulated)
        p50 = latency.p50 if latency is not None else None
        mean = latency.mean if latency is not None else None
        if samples:
            p50 = float(np.median(samples)) if p50 is None else p50
            mean = float(np.mean(samples)) if mean is None else mean
        bundle_id = rec.bundle_id if rec is not None else None
        profile_name = profile_name or (rec.profile if rec is not None else None)

        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise StoreError(f"Results store {self.path} has no run {run_id}.")
            self._upsert_device(
                conn, device, device_class, target_file, list(tags), is_emulated, seen=status != "unreachable"
            )
            if bundle_id is not None:
                conn.execute(
                    "INSERT OR IGNORE INTO bundles (bundle_id, profile_name, created) VALUES (?, ?, ?)",
                    (bundle_id, profile_name, None),
                )
            cursor = conn.execute(
                "INSERT INTO results (run_id, device, device_class, bundle_id, profile_name, status, error, record_path,"
                " record, p50, mean, peak_rss_mb, top1, agreement, throttled, emulated, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id, device, device_class, bundle_id, profile_name, status, error,
                    str(record_path) if record_path is not None else None,
                    json.dumps(rec.to_json(), sort_keys=True, default=str) if rec is not None else None,
                    p50, mean, rec.memory.peak_rss_mb if rec else None, rec.accuracy.top1 if rec else None,
                    rec.accuracy.agreement_with_host if rec else None, int(bool(rec and rec.throttled_now)), int(is_emulated),
                    utc_now(),
                ),
            )
            result_id = int(cursor.lastrowid)
            if samples:
                conn.executemany(
                    "INSERT INTO samples (result_id, idx, latency_ms) VALUES (?, ?, ?)",
                    ((result_id, i, float(v)) for i, v in enumerate(samples)),
                )
            conn.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (utc_now(), run_id))
        return result_id

    def get_result(self, result_id: int) -> Result:
        rows = self._read(f"SELECT {_RESULT_COLUMNS} FROM results WHERE id = ?", (result_id,))
        if not rows:
            raise StoreError(f"Results store {self.path} has no result {result_id}.")
        return _result(rows[0])

    def get_samples(self, result_id: int) -> np.ndarray:
        """Raw latency samples (ms) in the order they were timed; empty if the result has none."""
        rows = self._read("SELECT latency_ms FROM samples WHERE result_id = ? ORDER BY idx", (result_id,))
        return np.fromiter((r[0] for r in rows), dtype=np.float64, count=len(rows))

    def results_for_run(self, run_id: int) -> list[Result]:
        rows = self._read(
            f"SELECT {_RESULT_COLUMNS} FROM results WHERE run_id = ? ORDER BY device, profile_name, id", (run_id,)
        )
        return [_result(r) for r in rows]

    def history(
        self,
        device: str,
        profile_name: str,
        limit: int = 30,
        *,
        statuses: Sequence[str] = ("ok",),
        before_result_id: Optional[int] = None,
        emulated: Optional[bool] = None,
    ) -> list[Result]:
        """The latest ``limit`` results of ``device`` for ``profile_name``, oldest first.

        Only results whose status is in ``statuses`` (default: comparable ones), only those stored
        before ``before_result_id`` if given, only emulated/hardware ones if ``emulated`` is given.
        """
        where = ["device = ?", "profile_name = ?", f"status IN ({','.join('?' * len(statuses))})"]
        params: list[Any] = [device, profile_name, *statuses]
        if before_result_id is not None:
            where.append("id < ?")
            params.append(before_result_id)
        if emulated is not None:
            where.append("emulated = ?")
            params.append(int(emulated))
        rows = self._read(
            f"SELECT {_RESULT_COLUMNS} FROM results WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [_result(r) for r in reversed(rows)]

    # -- baselines -----------------------------------------------------------------------------

    def accept_baseline(
        self, result_id: int, device_key: Optional[str] = None, profile_name: Optional[str] = None, *, force: bool = False
    ) -> Baseline:
        """Make result ``result_id`` the baseline for ``device_key`` (device name by default, or a
        device class) and ``profile_name`` (the result's by default).

        Refuses (:class:`BaselineExistsError`) to replace a different existing baseline unless
        ``force``; accepting the current baseline again is a no-op. Only 'ok' results qualify.
        """
        with self._write() as conn:
            return self._accept(conn, result_id, device_key, profile_name, force)

    def accept_run_baselines(self, run_id: int, *, by_class: bool = False, force: bool = False) -> list[Baseline]:
        """Accept every 'ok' result of a run as the baseline of its device (or its device class).

        All or nothing: if any would replace an existing baseline and ``force`` is not set, nothing
        is accepted and the error lists every conflict.
        """
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise StoreError(f"Results store {self.path} has no run {run_id}.")
            rows = conn.execute(
                f"SELECT {_RESULT_COLUMNS} FROM results WHERE run_id = ? AND status = 'ok' ORDER BY device, id", (run_id,)
            ).fetchall()
            if not rows:
                raise StoreError(f"Run {run_id} has no valid ('ok') results to accept as baselines.")
            chosen: dict[tuple[str, str], Result] = {}
            for row in rows:
                result = _result(row)
                key = result.device_class if by_class else result.device
                if by_class and not key:
                    raise StoreError(f"Result {result.id} (device {result.device}) has no device class to accept it for.")
                if (key, result.profile_name) in chosen and by_class:
                    other = chosen[(key, result.profile_name)]
                    raise StoreError(
                        f"Run {run_id} has several results for device class '{key}' (devices {other.device} and "
                        f"{result.device}); accept one of them with its result id instead."
                    )
                chosen[(key, result.profile_name)] = result  # later result of the same device wins
            conflicts = []
            for (key, profile), result in chosen.items():
                existing = conn.execute(
                    "SELECT result_id FROM baselines WHERE device_key = ? AND profile_name = ?", (key, profile)
                ).fetchone()
                if existing is not None and existing[0] != result.id:
                    conflicts.append(f"{key}/{profile} (currently result {existing[0]})")
            if conflicts and not force:
                raise BaselineExistsError(
                    f"Baselines already exist for {', '.join(conflicts)}; nothing was changed. "
                    f"Rerun with --force to replace them with run {run_id}'s results."
                )
            return [self._accept(conn, r.id, key, profile, True) for (key, profile), r in chosen.items()]

    def _accept(self, conn, result_id, device_key, profile_name, force) -> Baseline:
        row = conn.execute(f"SELECT {_RESULT_COLUMNS} FROM results WHERE id = ?", (result_id,)).fetchone()
        if row is None:
            raise StoreError(f"Results store {self.path} has no result {result_id}.")
        result = _result(row)
        if result.status != "ok":
            raise StoreError(
                f"Result {result_id} (device {result.device}) is '{result.status}'"
                + (f" ({result.error})" if result.error else "") + " and cannot be a baseline; only valid runs can."
            )
        key = device_key or result.device
        profile = profile_name or result.profile_name
        if not profile:
            raise StoreError(f"Result {result_id} has no profile name; pass the profile to accept it for.")
        existing = conn.execute(
            "SELECT result_id, accepted_at FROM baselines WHERE device_key = ? AND profile_name = ?", (key, profile)
        ).fetchone()
        if existing is not None and existing[0] == result_id:
            return Baseline(key, profile, result_id, existing[1], result)
        if existing is not None and not force:
            raise BaselineExistsError(
                f"A baseline for {key}/{profile} already exists (result {existing[0]}, accepted {existing[1]}); "
                f"rerun with --force to replace it with result {result_id}."
            )
        now = utc_now()
        conn.execute(
            "INSERT INTO baselines (device_key, profile_name, result_id, accepted_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(device_key, profile_name) DO UPDATE SET result_id = excluded.result_id,"
            " accepted_at = excluded.accepted_at",
            (key, profile, result_id, now),
        )
        return Baseline(key, profile, result_id, now, result)

    def drop_baseline(self, device_key: str, profile_name: str) -> bool:
        with self._write() as conn:
            return conn.execute(
                "DELETE FROM baselines WHERE device_key = ? AND profile_name = ?", (device_key, profile_name)
            ).rowcount > 0

    def _baselines(self, where: str = "", params: Sequence[Any] = ()) -> list[Baseline]:
        cols = ", ".join(f"r.{c.strip()}" for c in _RESULT_COLUMNS.split(","))
        rows = self._read(
            f"SELECT b.device_key AS b_key, b.profile_name AS b_profile, b.accepted_at AS b_accepted, {cols}"
            f" FROM baselines b JOIN results r ON r.id = b.result_id {where} ORDER BY b.profile_name, b.device_key",
            params,
        )
        return [Baseline(r["b_key"], r["b_profile"], r["id"], r["b_accepted"], _result(r)) for r in rows]

    def baseline(
        self, device: str, device_class: Optional[str], profile_name: str, *, emulated: Optional[bool] = None
    ) -> Optional[Baseline]:
        """The baseline for ``device`` (its own first, then its class's), or None.

        With ``emulated`` given, a baseline measured the other way (hardware vs emulation) is
        skipped: emulated runs are only ever compared with emulated baselines and vice versa.
        """
        for key in (device, device_class):
            if not key:
                continue
            found = self._baselines("WHERE b.device_key = ? AND b.profile_name = ?", (key, profile_name))
            if found and (emulated is None or found[0].result.emulated == bool(emulated)):
                return found[0]
        return None

    def list_baselines(self) -> list[Baseline]:
        return self._baselines()

    # -- noise floors --------------------------------------------------------------------------

    def set_noise_floor(self, device: str, profile_name: str, floor: float, n_runs: int) -> NoiseFloor:
        now = utc_now()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO noise (device, profile_name, floor, n_runs, updated) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(device, profile_name) DO UPDATE SET floor = excluded.floor,"
                " n_runs = excluded.n_runs, updated = excluded.updated",
                (device, profile_name, float(floor), int(n_runs), now),
            )
        return NoiseFloor(device, profile_name, float(floor), int(n_runs), now)

    def noise_floor(self, device: str, profile_name: str) -> Optional[NoiseFloor]:
        rows = self._read("SELECT * FROM noise WHERE device = ? AND profile_name = ?", (device, profile_name))
        if not rows:
            return None
        r = rows[0]
        return NoiseFloor(r["device"], r["profile_name"], r["floor"], r["n_runs"], r["updated"])

    # -- verdicts ------------------------------------------------------------------------------

    def save_verdicts(self, run_id: int, verdicts: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        """Store (result id, verdict dict) pairs for a run, replacing earlier ones, in one transaction."""
        now = utc_now()
        with self._write() as conn:
            conn.execute("DELETE FROM verdicts WHERE run_id = ?", (run_id,))
            conn.executemany(
                "INSERT INTO verdicts (run_id, result_id, verdict, created) VALUES (?, ?, ?, ?)",
                ((run_id, rid, json.dumps(v, sort_keys=True, default=str), now) for rid, v in verdicts),
            )

    def saved_verdicts(self, run_id: int) -> list[dict[str, Any]]:
        rows = self._read("SELECT verdict FROM verdicts WHERE run_id = ? ORDER BY result_id", (run_id,))
        return [json.loads(r[0]) for r in rows]

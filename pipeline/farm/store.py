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

The tables and their migrations live in :mod:`pipeline.farm.schema`, the row types in
:mod:`pipeline.farm.rows`, the baseline/noise/verdict queries in :mod:`pipeline.farm.baselines`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from pipeline.clock import utc_now
from pipeline.deploy.record import DEFAULT_MAX_TEMPERATURE_C, ProfileRecord
from pipeline.farm.baselines import BaselineQueries, insert_confirmation
from pipeline.farm.rows import (
    RESULT_COLUMNS,
    RUN_COLUMNS,
    Baseline,
    BaselineExistsError,
    Device,
    NoiseFloor,
    Result,
    Run,
    StoreError,
    result_from_row,
    run_from_row,
)
from pipeline.farm.schema import MIGRATIONS, RESULT_STATUSES, RUN_KINDS, SCHEMA_VERSION
from pipeline.proc_identity import pid_alive, start_ticks
from pipeline.provenance import tool_info

# Callers have always imported the row types and errors from here.
__all__ = [
    "DEFAULT_STALE_AFTER_S", "MIGRATIONS", "SCHEMA_VERSION", "Baseline", "BaselineExistsError", "Device",
    "NoiseFloor", "Result", "ResultsStore", "Run", "StoreError",
]

DEFAULT_STALE_AFTER_S = 24 * 3600.0


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


# ----------------------------------------------------------------------------------- the store


class ResultsStore(BaselineQueries):
    """Open (creating or migrating as needed) the results database at ``path``.

    ``path`` defaults to ``results_dir()/"results.sqlite"``. Use as a context manager or call
    :meth:`close`.
    """

    file_name = "results.sqlite"
    what = "Results store"
    error = StoreError
    migrations = MIGRATIONS
    newer_hint = "upgrade edgeship or point $EDGESHIP_RESULTS elsewhere"

    def __enter__(self) -> "ResultsStore":
        return self

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
        """Open a run (status 'running') and return its id. ``info`` defaults to :func:`pipeline.provenance.tool_info`."""
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
        rows = self._read(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise StoreError(f"Results store {self.path} has no run {run_id}; `edgeship runs` lists the recorded runs.")
        return run_from_row(rows[0])

    def list_runs(self, limit: int = 50, kind: Optional[str] = None) -> list[Run]:
        """Most recent first."""
        where, params = ("WHERE kind = ?", [kind]) if kind else ("", [])
        rows = self._read(f"SELECT {RUN_COLUMNS} FROM runs {where} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [run_from_row(r) for r in rows]

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
        confirmation: Optional[tuple[Mapping[str, Any], Optional[Mapping[str, Any]]]] = None,
    ) -> int:
        """Store one device's outcome in one transaction (result row + all samples); returns its id.

        ``status`` is what the runner observed: 'ok' (``record`` required), 'unreachable',
        'failed', 'timeout' or 'busy' (``error`` says why; a partial ``record`` may be given). An 'ok'
        record that :meth:`ProfileRecord.invalid_reasons` rejects (throttled, too hot, malformed) is stored as
        'invalid' with the reasons in ``error``: kept for the record, never compared.
        ``confirmation`` (ConfirmationCheck dict, the agent's A/B record) is stored in the same transaction.
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
        energy = rec.energy if rec is not None else None

        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise StoreError(f"Results store {self.path} has no run {run_id}.")
            self._upsert_device(
                conn, device, device_class, target_file, list(tags), is_emulated, seen=status not in ("unreachable", "busy")
            )
            if bundle_id is not None:
                conn.execute(
                    "INSERT OR IGNORE INTO bundles (bundle_id, profile_name, created) VALUES (?, ?, ?)",
                    (bundle_id, profile_name, None),
                )
            cursor = conn.execute(
                "INSERT INTO results (run_id, device, device_class, bundle_id, profile_name, status, error, record_path,"
                " record, p50, mean, peak_rss_mb, top1, agreement, throttled, emulated, created,"
                " energy_mj_per_inference, power_w, idle_power_w)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id, device, device_class, bundle_id, profile_name, status, error,
                    str(record_path) if record_path is not None else None,
                    json.dumps(rec.to_json(), sort_keys=True, default=str) if rec is not None else None,
                    p50, mean, rec.memory.peak_rss_mb if rec else None, rec.accuracy.top1 if rec else None,
                    rec.accuracy.agreement_with_host if rec else None, int(bool(rec and rec.throttled_now)), int(is_emulated),
                    utc_now(), energy.mj_per_inference if energy else None, energy.load_power_w if energy else None,
                    energy.idle_power_w if energy else None,
                ),
            )
            result_id = int(cursor.lastrowid)
            if samples:
                conn.executemany(
                    "INSERT INTO samples (result_id, idx, latency_ms) VALUES (?, ?, ?)",
                    ((result_id, i, float(v)) for i, v in enumerate(samples)),
                )
            if confirmation is not None:
                insert_confirmation(conn, result_id, *confirmation)
            conn.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (utc_now(), run_id))
        return result_id

    def get_result(self, result_id: int) -> Result:
        rows = self._read(f"SELECT {RESULT_COLUMNS} FROM results WHERE id = ?", (result_id,))
        if not rows:
            raise StoreError(f"Results store {self.path} has no result {result_id}.")
        return result_from_row(rows[0])

    def get_samples(self, result_id: int) -> np.ndarray:
        """Raw latency samples (ms) in the order they were timed; empty if the result has none."""
        rows = self._read("SELECT latency_ms FROM samples WHERE result_id = ? ORDER BY idx", (result_id,))
        return np.fromiter((r[0] for r in rows), dtype=np.float64, count=len(rows))

    def results_for_run(self, run_id: int) -> list[Result]:
        rows = self._read(
            f"SELECT {RESULT_COLUMNS} FROM results WHERE run_id = ? ORDER BY device, profile_name, id", (run_id,)
        )
        return [result_from_row(r) for r in rows]

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
            f"SELECT {RESULT_COLUMNS} FROM results WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [result_from_row(r) for r in reversed(rows)]


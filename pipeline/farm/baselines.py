"""The results store's judgement tables: accepted baselines, learnt noise floors, saved verdicts.

:class:`~pipeline.farm.store.ResultsStore` builds on :class:`BaselineQueries` and adds runs,
devices and results; the split only keeps each file readable, every method is still the store's.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable, Mapping, Optional, Sequence

from pipeline.clock import utc_now
from pipeline.farm.rows import RESULT_COLUMNS, Baseline, BaselineExistsError, NoiseFloor, Result, StoreError, result_from_row
from pipeline.sqlite_store import SQLiteStore


class BaselineQueries(SQLiteStore):
    """Baselines, noise floors and verdicts of the results store (not opened on its own)."""

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
                f"SELECT {RESULT_COLUMNS} FROM results WHERE run_id = ? AND status = 'ok' ORDER BY device, id", (run_id,)
            ).fetchall()
            if not rows:
                raise StoreError(f"Run {run_id} has no valid ('ok') results to accept as baselines.")
            chosen: dict[tuple[str, str], Result] = {}
            for row in rows:
                result = result_from_row(row)
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

    def _accept(
        self, conn: sqlite3.Connection, result_id: int, device_key: Optional[str], profile_name: Optional[str], force: bool
    ) -> Baseline:
        row = conn.execute(f"SELECT {RESULT_COLUMNS} FROM results WHERE id = ?", (result_id,)).fetchone()
        if row is None:
            raise StoreError(f"Results store {self.path} has no result {result_id}.")
        result = result_from_row(row)
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
        cols = ", ".join(f"r.{c.strip()}" for c in RESULT_COLUMNS.split(","))
        rows = self._read(
            f"SELECT b.device_key AS b_key, b.profile_name AS b_profile, b.accepted_at AS b_accepted, {cols}"
            f" FROM baselines b JOIN results r ON r.id = b.result_id {where} ORDER BY b.profile_name, b.device_key",
            params,
        )
        return [Baseline(r["b_key"], r["b_profile"], r["id"], r["b_accepted"], result_from_row(r)) for r in rows]

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

    # -- confirmations ------------------------------------------------------------------------

    def save_confirmation(self, result_id: int, check: Mapping[str, Any], record: Optional[Mapping[str, Any]] = None) -> None:
        """Store a result's A/B confirmation (the check and the agent's whole record), replacing any."""
        with self._write() as conn:
            insert_confirmation(conn, result_id, check, record)

    def get_confirmation(self, result_id: int) -> Optional[dict[str, Any]]:
        """The saved ConfirmationCheck dict of a result, or None when no A/B ran for it."""
        rows = self._read("SELECT check_json FROM confirmations WHERE result_id = ?", (result_id,))
        return json.loads(rows[0][0]) if rows else None

    def get_confirmation_record(self, result_id: int) -> Optional[dict[str, Any]]:
        rows = self._read("SELECT record FROM confirmations WHERE result_id = ?", (result_id,))
        return json.loads(rows[0][0]) if rows and rows[0][0] else None


def insert_confirmation(conn: sqlite3.Connection, result_id: int, check: Mapping[str, Any], record: Optional[Mapping[str, Any]]) -> None:
    """One row of ``confirmations``, in the caller's transaction (record_result writes it with its result)."""
    conn.execute(
        "INSERT OR REPLACE INTO confirmations (result_id, status, check_json, record, created) VALUES (?, ?, ?, ?, ?)",
        (
            result_id, check["status"], json.dumps(dict(check), sort_keys=True, default=str),
            json.dumps(dict(record), sort_keys=True, default=str) if record is not None else None, utc_now(),
        ),
    )

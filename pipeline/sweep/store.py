"""SQLite store for sweeps: one row per sweep, one per measured variant.

Lives next to the farm's database (``results/sweeps.sqlite``) but in its own file: a sweep is an
exploration, not a nightly baseline, and must never feed the regression check by accident.
Every variant is written in its own transaction, so a sweep killed half-way keeps what it measured.

Schema version 1 is the layout stores had before they were versioned, so its script creates only
what is missing: an unversioned store is adopted in place, rows and all.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from pipeline.errors import EdgeshipError
from pipeline.sqlite_store import Migration, SQLiteStore

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    base_profile TEXT NOT NULL,
    target TEXT NOT NULL,
    grid_json TEXT NOT NULL,
    finished TEXT
);
CREATE TABLE IF NOT EXISTS sweep_variants (
    sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
    name TEXT NOT NULL,
    settings_json TEXT NOT NULL,
    profile_json TEXT NOT NULL,
    bundle_id TEXT,
    accuracy REAL,
    latency_ms REAL,
    size_kb REAL,
    parameters INTEGER,
    macs INTEGER,
    device_top1 REAL,
    agreement REAL,
    record_path TEXT,
    build_seconds REAL,
    built_from_cache INTEGER,
    error TEXT,
    PRIMARY KEY (sweep_id, name)
);
CREATE INDEX IF NOT EXISTS sweep_variants_bundle ON sweep_variants(bundle_id);
"""

MIGRATIONS: list[Migration] = [(1, _SCHEMA_V1)]  # append new steps; never edit a released one

ROW_KEYS = (
    "name", "bundle_id", "accuracy", "latency_ms", "size_kb", "parameters", "macs", "device_top1", "agreement",
    "record_path", "build_seconds", "built_from_cache", "error",
)


class SweepStoreError(EdgeshipError):
    pass


class SweepStore(SQLiteStore):
    file_name = "sweeps.sqlite"
    what = "Sweep store"
    error = SweepStoreError
    migrations = MIGRATIONS

    def __enter__(self) -> "SweepStore":
        return self

    def start(self, created: str, base_profile: str, target: str, grid: dict[str, Any]) -> int:
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO sweeps (created, base_profile, target, grid_json) VALUES (?, ?, ?, ?)",
                (created, base_profile, target, json.dumps(grid, sort_keys=True)),
            )
            return int(cur.lastrowid)

    def finish(self, sweep_id: int, finished: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE sweeps SET finished = ? WHERE id = ?", (finished, sweep_id))

    def add_variant(self, sweep_id: int, row: dict[str, Any], settings: dict[str, Any], profile: dict[str, Any]) -> None:
        values = [row.get(key) for key in ROW_KEYS]
        with self._write() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO sweep_variants (sweep_id, settings_json, profile_json, {', '.join(ROW_KEYS)}) "
                f"VALUES (?, ?, ?, {', '.join('?' for _ in ROW_KEYS)})",
                [sweep_id, json.dumps(settings, sort_keys=True), json.dumps(profile, sort_keys=True), *values],
            )

    def sweep(self, sweep_id: Optional[int] = None) -> dict[str, Any]:
        """A sweep's header (the latest when ``sweep_id`` is None)."""
        if sweep_id is None:
            rows = self._read("SELECT * FROM sweeps ORDER BY id DESC LIMIT 1")
        else:
            rows = self._read("SELECT * FROM sweeps WHERE id = ?", (sweep_id,))
        row = rows[0] if rows else None
        if row is None:
            which = "no sweep has been run yet" if sweep_id is None else f"there is no sweep {sweep_id}"
            raise SweepStoreError(f"Sweep store {self.path}: {which}. Run `edgeship sweep --profile P --target T` first.")
        out = dict(row)
        out["grid"] = json.loads(out.pop("grid_json"))
        return out

    def variants(self, sweep_id: int) -> list[dict[str, Any]]:
        rows = self._read("SELECT * FROM sweep_variants WHERE sweep_id = ? ORDER BY rowid", (sweep_id,))
        out = []
        for row in rows:
            item = dict(row)
            item["settings"] = json.loads(item.pop("settings_json"))
            item["profile"] = json.loads(item.pop("profile_json"))
            out.append(item)
        return out

    def measured(self, bundle_id: str, target: str) -> Optional[dict[str, Any]]:
        """The latest successful measurement of ``bundle_id`` on ``target`` from any sweep."""
        rows = self._read(
            "SELECT v.* FROM sweep_variants v JOIN sweeps s ON s.id = v.sweep_id "
            "WHERE v.bundle_id = ? AND s.target = ? AND v.error IS NULL AND v.latency_ms IS NOT NULL "
            "ORDER BY v.sweep_id DESC LIMIT 1",
            (bundle_id, target),
        )
        return dict(rows[0]) if rows else None

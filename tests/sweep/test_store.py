"""The real SQLite sweep store: round trip, reuse lookup, and per-variant durability."""

from __future__ import annotations

import sqlite3

import pytest

from pipeline.sweep.runner import load_sweep
from pipeline.sweep.store import MIGRATIONS, SweepStore, SweepStoreError


def row(name: str, bundle: str, latency: float | None, error: str | None = None) -> dict:
    return {"name": name, "bundle_id": bundle, "accuracy": 0.9, "latency_ms": latency, "size_kb": 10.0, "parameters": 5,
            "macs": 7, "error": error}


def test_round_trip_and_measured_lookup(tmp_path) -> None:
    with SweepStore(tmp_path / "s.sqlite") as store:
        sid = store.start("2026-01-01T00:00:00Z", "quick", "local", {"family": ["mobilenet_v2"]})
        store.add_variant(sid, row("a", "b1", 1.5), {"quantization": "int8"}, {"name": "quick.a"})
        store.add_variant(sid, row("b", "b2", None, error="boom"), {"quantization": "float32"}, {"name": "quick.b"})
        store.finish(sid, "2026-01-01T00:01:00Z")
        loaded = load_sweep(store)  # the latest
        assert loaded.sweep_id == sid and [r["name"] for r in loaded.rows] == ["a", "b"]
        assert loaded.rows[0]["quantization"] == "int8" and loaded.profiles["a"] == {"name": "quick.a"}
        assert store.measured("b1", "local")["latency_ms"] == 1.5
        assert store.measured("b1", "rpi4") is None  # another target never reuses it
        assert store.measured("b2", "local") is None  # a failed measurement is not reused
    # Committed per variant: another connection sees both rows.
    count = sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT COUNT(*) FROM sweep_variants").fetchone()[0]
    assert count == 2


def test_missing_sweep_is_a_clear_error(tmp_path) -> None:
    with SweepStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(SweepStoreError, match="no sweep has been run yet"):
            load_sweep(store)
        with pytest.raises(SweepStoreError, match="there is no sweep 42"):
            load_sweep(store, 42)


def test_corrupt_database_names_the_file(tmp_path) -> None:
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SweepStoreError, match="s.sqlite cannot be opened"):
        SweepStore(path)


# The layout sweep stores were written with before they carried a schema version (frozen here: the
# test is that such a file, made by that code, keeps its rows).
UNVERSIONED_SCHEMA = """
CREATE TABLE sweeps (id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, base_profile TEXT NOT NULL,
    target TEXT NOT NULL, grid_json TEXT NOT NULL, finished TEXT);
CREATE TABLE sweep_variants (sweep_id INTEGER NOT NULL REFERENCES sweeps(id), name TEXT NOT NULL,
    settings_json TEXT NOT NULL, profile_json TEXT NOT NULL, bundle_id TEXT, accuracy REAL, latency_ms REAL,
    size_kb REAL, parameters INTEGER, macs INTEGER, device_top1 REAL, agreement REAL, record_path TEXT,
    build_seconds REAL, built_from_cache INTEGER, error TEXT, PRIMARY KEY (sweep_id, name));
CREATE INDEX sweep_variants_bundle ON sweep_variants(bundle_id);
INSERT INTO sweeps VALUES (1, '2026-01-01T00:00:00Z', 'quick', 'local', '{"family": ["mobilenet_v2"]}', '2026-01-01T00:01:00Z');
INSERT INTO sweep_variants (sweep_id, name, settings_json, profile_json, bundle_id, latency_ms, accuracy)
    VALUES (1, 'a', '{"quantization": "int8"}', '{"name": "quick.a"}', 'b1', 1.5, 0.9);
"""


def _version(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]


def test_new_store_records_its_schema_version(tmp_path) -> None:
    with SweepStore(tmp_path / "s.sqlite") as store:
        assert store.schema_version() == MIGRATIONS[-1][0]
    assert _version(tmp_path / "s.sqlite") == MIGRATIONS[-1][0]


def test_unversioned_store_is_migrated_in_place_keeping_its_rows(tmp_path) -> None:
    path = tmp_path / "s.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(UNVERSIONED_SCHEMA)
    with SweepStore(path) as store:
        assert store.schema_version() == MIGRATIONS[-1][0]
        loaded = load_sweep(store)
        assert loaded.sweep_id == 1 and [r["name"] for r in loaded.rows] == ["a"]
        assert store.measured("b1", "local")["latency_ms"] == 1.5
        second = store.start("2026-01-02T00:00:00Z", "quick", "local", {})
        assert second == 2  # AUTOINCREMENT carried on, nothing was recreated
    assert _version(path) == MIGRATIONS[-1][0]


def test_store_from_a_newer_edgeship_is_refused_naming_the_file(tmp_path) -> None:
    path = tmp_path / "s.sqlite"
    SweepStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(SweepStoreError) as err:
        SweepStore(path)
    message = str(err.value)
    assert str(path) in message and "schema version 99, newer than this edgeship" in message and "\n" not in message
    assert _version(path) == 99  # left alone


def test_failed_migration_leaves_the_file_as_it_was(tmp_path) -> None:
    path = tmp_path / "s.sqlite"
    with SweepStore(path) as store:
        store.start("2026-01-01T00:00:00Z", "quick", "local", {})

    class Broken(SweepStore):
        # Step 2 alters a table, then fails: the ALTER must be rolled back with it.
        migrations = [*MIGRATIONS, (MIGRATIONS[-1][0] + 1, "ALTER TABLE sweeps ADD COLUMN note TEXT; INSERT INTO nowhere VALUES (1)")]

    with pytest.raises(SweepStoreError, match=r"s.sqlite: upgrading the schema from version 1 to 2 failed .*no such table: nowhere.*unchanged"):
        Broken(path)
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(sweeps)")]
        assert "note" not in columns and conn.execute("SELECT COUNT(*) FROM sweeps").fetchone()[0] == 1
    assert _version(path) == 1
    with SweepStore(path) as store:  # still usable by this edgeship
        assert store.sweep()["base_profile"] == "quick"

"""The real SQLite sweep store: round trip, reuse lookup, and per-variant durability."""

from __future__ import annotations

import sqlite3

import pytest

from pipeline.sweep.runner import load_sweep
from pipeline.sweep.store import SweepStore, SweepStoreError


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

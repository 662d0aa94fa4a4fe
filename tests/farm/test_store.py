"""The results store: schema, transactions, concurrency, crash recovery, baselines."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.deploy.record import ProfileRecord
from pipeline.errors import EdgeshipError
from pipeline.farm.rows import BaselineExistsError, StoreError
from pipeline.farm.schema import MIGRATIONS, SCHEMA_VERSION
from pipeline.farm.store import ResultsStore
from pipeline.paths import PROJECT_ROOT
from tests.helpers.records import latency_samples, make_record


@pytest.fixture
def store(tmp_path: Path):
    with ResultsStore(tmp_path / "results.sqlite") as s:
        yield s


def test_default_location_follows_results_dir(isolated_results: Path) -> None:
    with ResultsStore() as s:
        assert s.path == isolated_results / "results.sqlite"
    assert (isolated_results / "results.sqlite").is_file()


def test_schema_pragmas_and_version(store: ResultsStore) -> None:
    conn = sqlite3.connect(store.path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"schema_version", "runs", "devices", "bundles", "results", "samples", "baselines", "noise"} <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    conn.close()
    assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    # reopening does not re-run migrations or duplicate the version row
    with ResultsStore(store.path) as again:
        assert again.schema_version() == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    ResultsStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"newer than this edgeship understands \(4\); upgrade edgeship or point \$EDGESHIP_RESULTS"):
        ResultsStore(path)


def test_a_store_written_at_the_oldest_schema_version_opens_with_its_rows(tmp_path: Path) -> None:
    # What the store's own migration loop left behind before it used the shared runner: the
    # version-1 tables, one schema_version row, and data.
    path = tmp_path / "old.sqlite"
    oldest, script = MIGRATIONS[0]
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (oldest,))
    conn.execute(
        "INSERT INTO runs (id, kind, started_at, status, info) VALUES (7, 'farm', '2025-01-01T00:00:00+00:00', 'finished', '{}')"
    )
    conn.execute(
        "INSERT INTO results (id, run_id, device, status, error, created)"
        " VALUES (3, 7, 'rpi4-a', 'unreachable', 'down', '2025-01-01T00:00:01+00:00')"
    )
    conn.commit()
    conn.close()
    with ResultsStore(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.get_run(7).status == "finished"
        assert [(r.id, r.device, r.error) for r in store.results_for_run(7)] == [(3, "rpi4-a", "down")]
        new_run = store.start_run("farm")  # and it takes writes
        assert store.get_run(new_run).status == "running"
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    conn.close()


def test_a_version_1_store_with_samples_baselines_and_verdicts_upgrades_to_busy(tmp_path: Path) -> None:
    # Version 2 rebuilds the results table (its CHECK gains 'busy'); the rows that reference it stay.
    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0][1])
    conn.executescript(
        "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);"
        "INSERT INTO runs (id, kind, started_at, status, info) VALUES (7, 'farm', '2025-01-01T00:00:00+00:00', 'finished', '{}');"
        "INSERT INTO results (id, run_id, device, device_class, profile_name, status, p50, created)"
        " VALUES (3, 7, 'rpi4-a', 'rpi4', 'default', 'ok', 12.5, '2025-01-01T00:00:01+00:00');"
        "INSERT INTO samples VALUES (3, 0, 12.0), (3, 1, 13.0);"
        "INSERT INTO baselines VALUES ('rpi4-a', 'default', 3, '2025-01-02T00:00:00+00:00');"
        "INSERT INTO verdicts VALUES (7, 3, '{\"status\": \"pass\"}', '2025-01-01T00:00:02+00:00');"
    )
    with pytest.raises(sqlite3.IntegrityError):  # what version 1 refuses
        conn.execute("INSERT INTO results (run_id, device, status, created) VALUES (7, 'x', 'busy', 'now')")
    conn.close()
    with ResultsStore(path) as store:
        assert store.schema_version() == SCHEMA_VERSION == 4
        assert store.get_samples(3).tolist() == [12.0, 13.0]
        assert store.get_result(3).p50 == 12.5
        assert store.saved_verdicts(7) == [{"status": "pass"}]
        busy = store.record_result(7, "rpi4-b", "rpi4", "default", "busy", None, None, "held by ci/alice")
        assert store.get_result(busy).status == "busy"
        assert store.integrity_check() == "ok"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("SELECT device_key, result_id FROM baselines").fetchall() == [("rpi4-a", 3)]
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'results' AND type = 'index'")} >= {
        "results_run", "results_history"}
    assert "REFERENCES results(" in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'samples'").fetchone()[0]
    conn.close()


def test_record_ok_result_roundtrip(store: ResultsStore, tmp_path: Path) -> None:
    run_id = store.start_run("farm", "farm.yaml", "default")
    samples = latency_samples(1, n=150)
    record = make_record(samples, top1=0.87, agreement=0.99, peak_rss_mb=51.25)
    rid = store.record_result(run_id, "rpi4-a", "rpi4", "default", "ok", record, tmp_path / "rec.json",
                              target_file="targets/rpi4-a.yaml", tags=["lab", "pi"])
    result = store.get_result(rid)
    assert result.status == "ok" and result.error is None
    assert result.bundle_id == record["bundle_id"] and result.profile_name == "default"
    assert result.p50 == pytest.approx(np.median(samples))
    assert result.mean == pytest.approx(samples.mean(), rel=1e-6)
    assert (result.top1, result.agreement, result.peak_rss_mb) == (0.87, 0.99, 51.25)
    assert result.throttled is False and result.emulated is False
    assert result.record.to_json() == json.loads(json.dumps(record))
    assert result.record_path == str(tmp_path / "rec.json")
    np.testing.assert_array_equal(store.get_samples(rid), samples)
    device = store.get_device("rpi4-a")
    assert device.device_class == "rpi4" and device.tags == ["lab", "pi"] and device.last_seen
    assert device.target_file == "targets/rpi4-a.yaml"
    assert [r.id for r in store.results_for_run(run_id)] == [rid]
    store.finish_run(run_id)
    run = store.get_run(run_id)
    assert run.status == "finished" and run.finished_at and run.info.get("edgeship")


def test_failure_statuses_are_stored_without_samples(store: ResultsStore) -> None:
    run_id = store.start_run("farm")
    rid = store.record_result(run_id, "rpi4-b", "rpi4", "default", "unreachable", None, None, error="ssh: timed out")
    result = store.get_result(rid)
    assert result.status == "unreachable" and result.error == "ssh: timed out" and result.record is None
    assert store.get_samples(rid).size == 0
    assert store.get_device("rpi4-b").last_seen is None  # never reached
    with pytest.raises(ValueError):
        store.record_result(run_id, "x", None, "default", "ok", None, None)
    with pytest.raises(ValueError):
        store.record_result(run_id, "x", None, "default", "weird", None, None)
    with pytest.raises(StoreError, match="no run 999"):
        store.record_result(999, "x", None, "default", "failed", None, None, error="boom")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"throttled": 0x4}, "throttled"),
        ({"throttled": 0x2}, "frequency capped"),
        ({"throttled": 0x8}, "soft temp limit"),
        ({"temperature_c": 83.5}, "83.5 °C is above the 80.0 °C limit"),
    ],
)
def test_throttled_or_hot_record_is_invalid(store: ResultsStore, overrides: dict, expected: str) -> None:
    run_id = store.start_run("farm")
    rid = store.record_result(run_id, "rpi4-a", "rpi4", "default", "ok", make_record(latency_samples(2), **overrides), None)
    result = store.get_result(rid)
    assert result.status == "invalid"
    assert expected in result.error
    assert store.get_samples(rid).size == 200  # stored all the same
    assert store.history("rpi4-a", "default") == []  # but never offered for comparison
    assert result.throttled is ("throttled" in overrides)


def test_sticky_ever_throttled_bits_do_not_invalidate(store: ResultsStore) -> None:
    run_id = store.start_run("farm")
    record = make_record(latency_samples(3), throttled=0x50000, temperature_c=79.9)  # ever-throttled, ever-capped
    assert ProfileRecord.parse(record).invalid_reasons() == []
    rid = store.record_result(run_id, "rpi4-a", "rpi4", "default", "ok", record, None)
    assert store.get_result(rid).status == "ok"


def test_malformed_record_is_invalid(store: ResultsStore) -> None:
    run_id = store.start_run("farm")
    record = make_record(latency_samples(3))
    record["latency_ms"]["samples"] = []
    record["schema_version"] = 2
    rid = store.record_result(run_id, "rpi4-a", "rpi4", "default", "ok", record, None)
    result = store.get_result(rid)
    assert result.status == "invalid"
    assert "schema_version is 2" in result.error and "samples is missing or empty" in result.error


def test_emulated_flag_from_record_or_caller(store: ResultsStore) -> None:
    run_id = store.start_run("farm")
    a = store.record_result(run_id, "qemu-a", "rpi4", "default", "ok", make_record(latency_samples(4), emulated=True), None)
    b = store.record_result(run_id, "qemu-b", "rpi4", "default", "ok", make_record(latency_samples(4)), None, emulated=True)
    assert store.get_result(a).emulated and store.get_result(b).emulated
    assert store.get_device("qemu-a").emulated


def test_result_and_samples_commit_together(store: ResultsStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while inserting samples rolls the result row back too."""
    run_id = store.start_run("farm")
    record = make_record(latency_samples(5, n=50))
    real_conn = store._conn

    class Exploding:
        def __getattr__(self, name):
            return getattr(real_conn, name)

        def executemany(self, sql, rows):
            if "INSERT INTO samples" in sql:
                rows = list(rows)
                real_conn.executemany(sql, rows[:10])  # some samples are written...
                raise sqlite3.OperationalError("disk I/O error")  # ...then the disk fails
            return real_conn.executemany(sql, rows)

    monkeypatch.setattr(store, "_conn", Exploding())
    with pytest.raises(sqlite3.OperationalError):
        store.record_result(run_id, "rpi4-a", "rpi4", "default", "ok", record, None)
    monkeypatch.setattr(store, "_conn", real_conn)
    assert store.results_for_run(run_id) == []
    assert real_conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 0
    # and the store is still usable afterwards
    rid = store.record_result(run_id, "rpi4-a", "rpi4", "default", "ok", record, None)
    assert store.get_samples(rid).size == 50


class _BusyOnWal:
    """A connection whose first ``busy`` WAL switches fail the way SQLite fails them while another
    process is creating the file: at once, without calling the busy handler."""

    def __init__(self, conn: sqlite3.Connection, busy: int) -> None:
        self.conn, self.busy, self.attempts = conn, busy, 0

    def execute(self, sql: str, *args):
        if "journal_mode" in sql:
            self.attempts += 1
            if self.attempts <= self.busy:
                raise sqlite3.OperationalError("database is locked")
        return self.conn.execute(sql, *args)


def test_wal_switch_retries_while_another_process_creates_the_file(store: ResultsStore) -> None:
    busy = _BusyOnWal(store._conn, busy=3)
    store._conn = busy
    assert store._switch_to_wal() == "wal"
    assert busy.attempts == 4
    store._conn = busy.conn


def test_wal_switch_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite", busy_timeout_s=0.2)
    real = store._conn
    store._conn = _BusyOnWal(real, busy=10**6)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store._switch_to_wal()
    assert 0.1 < time.monotonic() - started < 2.0
    real.close()


def _writer(db: Path, device: str, count: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.farm.writer_process", str(db), device, str(count), *extra],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    db = tmp_path / "shared.sqlite"  # not created yet: both processes create/migrate it at once
    go = tmp_path / "go"
    procs = [_writer(db, "shard-a", 250, "--go", str(go)), _writer(db, "shard-b", 250, "--go", str(go))]
    for proc in procs:
        assert proc.stdout.readline().startswith("started"), proc.stderr.read()
    go.touch()  # both are connected and waiting: start writing at the same moment
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with ResultsStore(db) as s:
        assert s.integrity_check() == "ok"
        runs = s.list_runs()
        assert len(runs) == 2 and {r.status for r in runs} == {"finished"}
        for run in runs:
            results = s.results_for_run(run.id)
            assert len(results) == 250
            assert {r.device for r in results} == {run.info["writer"]}
        counts = s._conn.execute(
            "SELECT r.id, count(s.idx), json_extract(r.record, '$.latency_ms.count') FROM results r "
            "LEFT JOIN samples s ON s.result_id = r.id GROUP BY r.id"
        ).fetchall()
        assert len(counts) == 500
        # the two writers really overlapped: their result ids interleave
        ids_a = [r.id for r in s.results_for_run(runs[0].id)]
        ids_b = [r.id for r in s.results_for_run(runs[1].id)]
        assert min(ids_a) < max(ids_b) and min(ids_b) < max(ids_a)
        assert all(n == expected for _, n, expected in counts)


def test_killed_writer_leaves_only_whole_results_and_run_is_aborted(tmp_path: Path) -> None:
    db = tmp_path / "killed.sqlite"
    proc = _writer(db, "victim", 0, "--forever")
    line = proc.stdout.readline()
    assert line.startswith("started"), proc.stderr.read()
    run_id = int(line.split()[1])
    assert proc.stdout.readline().startswith("ready"), proc.stderr.read()
    time.sleep(0.6)  # let it commit a number of results, then kill it mid-write
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    with ResultsStore(db) as s:
        assert s.integrity_check() == "ok"
        results = s.results_for_run(run_id)
        assert len(results) >= 1
        for result in results:  # no half-written result: every row has all of its samples
            assert s.get_samples(result.id).size == result.record.latency.count
        assert s.get_run(run_id).status == "running"
        # a live run in this process is not touched
        live = s.start_run("farm")
        assert s.mark_stale_runs_aborted() == [run_id]
        assert s.get_run(run_id).status == "aborted"
        assert s.get_run(live).status == "running"
        assert len(s.results_for_run(run_id)) == len(results)  # results kept
        assert s.mark_stale_runs_aborted() == []


def test_silent_runs_from_other_hosts_are_aborted_after_timeout(store: ResultsStore) -> None:
    run_id = store.start_run("farm")
    store._conn.execute("UPDATE runs SET host = 'elsewhere', heartbeat_at = '2020-01-01T00:00:00+00:00' WHERE id = ?", (run_id,))
    fresh = store.start_run("farm")
    store._conn.execute("UPDATE runs SET host = 'elsewhere' WHERE id = ?", (fresh,))
    assert store.mark_stale_runs_aborted(stale_after_s=3600) == [run_id]
    assert store.get_run(fresh).status == "running"


def test_history_is_chronological_and_filtered(store: ResultsStore) -> None:
    ids = []
    for night in range(6):
        run_id = store.start_run("farm")
        throttled = 0x4 if night == 2 else 0
        ids.append(store.record_result(run_id, "rpi4-a", "rpi4", "default", "ok",
                                       make_record(latency_samples(night), throttled=throttled), None))
        store.record_result(run_id, "rpi4-b", "rpi4", "default", "ok", make_record(latency_samples(night)), None)
        store.finish_run(run_id)
    history = store.history("rpi4-a", "default", limit=3)
    assert [r.id for r in history] == [ids[3], ids[4], ids[5]]
    assert [r.id for r in store.history("rpi4-a", "default")] == [ids[i] for i in (0, 1, 3, 4, 5)]
    assert [r.id for r in store.history("rpi4-a", "default", before_result_id=ids[4])] == [ids[0], ids[1], ids[3]]
    assert [r.id for r in store.history("rpi4-a", "default", statuses=("invalid",))] == [ids[2]]
    assert store.history("rpi4-a", "other-profile") == []


def test_baselines_accept_refuse_force_and_lookup(store: ResultsStore) -> None:
    run1 = store.start_run("farm")
    r1 = store.record_result(run1, "rpi4-a", "rpi4", "default", "ok", make_record(latency_samples(1)), None)
    r1b = store.record_result(run1, "rpi4-b", "rpi4", "default", "ok", make_record(latency_samples(1)), None)
    bad = store.record_result(run1, "rpi4-c", "rpi4", "default", "ok", make_record(latency_samples(1), throttled=4), None)
    run2 = store.start_run("farm")
    r2 = store.record_result(run2, "rpi4-a", "rpi4", "default", "ok", make_record(latency_samples(2)), None)

    b = store.accept_baseline(r1)
    assert (b.device_key, b.profile_name, b.result_id) == ("rpi4-a", "default", r1)
    assert store.accept_baseline(r1).result_id == r1  # same again: no-op, no error
    with pytest.raises(BaselineExistsError) as info:
        store.accept_baseline(r2)
    assert isinstance(info.value, EdgeshipError)
    assert "--force" in str(info.value) and "rpi4-a/default" in str(info.value)
    assert store.baseline("rpi4-a", "rpi4", "default").result_id == r1
    assert store.accept_baseline(r2, force=True).result_id == r2
    assert store.baseline("rpi4-a", "rpi4", "default").result_id == r2

    with pytest.raises(StoreError, match="invalid"):
        store.accept_baseline(bad)

    # class baseline: used by devices without their own
    store.accept_baseline(r1b, device_key="rpi4")
    assert store.baseline("rpi4-new", "rpi4", "default").result_id == r1b
    assert store.baseline("rpi4-a", "rpi4", "default").result_id == r2  # own one first
    assert store.baseline("rpi4-new", "rpi5", "default") is None
    assert [(b.device_key, b.result_id) for b in store.list_baselines()] == [("rpi4", r1b), ("rpi4-a", r2)]
    assert store.drop_baseline("rpi4", "default") and store.baseline("rpi4-new", "rpi4", "default") is None


def test_accept_run_baselines_is_all_or_nothing(store: ResultsStore) -> None:
    run1 = store.start_run("farm")
    for dev in ("a", "b"):
        store.record_result(run1, dev, "rpi4", "default", "ok", make_record(latency_samples(1)), None)
    store.record_result(run1, "c", "rpi4", "default", "unreachable", None, None, error="down")
    accepted = store.accept_run_baselines(run1)
    assert sorted(b.device_key for b in accepted) == ["a", "b"]
    run2 = store.start_run("farm")
    store.record_result(run2, "a", "rpi4", "default", "ok", make_record(latency_samples(2)), None)
    store.record_result(run2, "d", "rpi4", "default", "ok", make_record(latency_samples(2)), None)
    with pytest.raises(BaselineExistsError, match="--force"):
        store.accept_run_baselines(run2)
    assert store.baseline("d", None, "default") is None  # nothing changed
    store.accept_run_baselines(run2, force=True)
    assert store.baseline("d", None, "default") is not None
    assert store.baseline("a", None, "default").result.run_id == run2


def test_emulated_baseline_is_never_used_for_hardware(store: ResultsStore) -> None:
    run_id = store.start_run("farm")
    emu = store.record_result(run_id, "qemu-pi", "rpi4", "default", "ok", make_record(latency_samples(1), emulated=True), None)
    store.accept_baseline(emu, device_key="rpi4")
    assert store.baseline("rpi4-a", "rpi4", "default", emulated=False) is None
    assert store.baseline("qemu-pi", "rpi4", "default", emulated=True).result_id == emu


def test_noise_floor_and_verdict_storage(store: ResultsStore) -> None:
    assert store.noise_floor("rpi4-a", "default") is None
    store.set_noise_floor("rpi4-a", "default", 0.07, 8)
    store.set_noise_floor("rpi4-a", "default", 0.08, 9)
    floor = store.noise_floor("rpi4-a", "default")
    assert (floor.floor, floor.n_runs) == (0.08, 9)
    run_id = store.start_run("farm")
    rid = store.record_result(run_id, "rpi4-a", "rpi4", "default", "ok", make_record(latency_samples(1)), None)
    store.save_verdicts(run_id, [(rid, {"status": "pass"})])
    store.save_verdicts(run_id, [(rid, {"status": "regression"})])
    assert store.saved_verdicts(run_id) == [{"status": "regression"}]


def test_a_store_locked_for_too_long_is_a_user_facing_error(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with ResultsStore(path, busy_timeout_s=0.2) as s:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        started = time.monotonic()
        with pytest.raises(StoreError, match="stayed locked by another process"):
            s.start_run("farm")
        assert time.monotonic() - started >= 0.15  # it waited for busy_timeout first
        holder.execute("ROLLBACK")
        holder.close()
        assert s.start_run("farm") >= 1  # and works again once the lock is released

"""Energy in the results store (real SQLite, including stores written before it existed) and in the
regression check, which compares it like memory and only when both runs have an estimate."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pipeline.farm.policy import Policy, RegressionSettings
from pipeline.farm.regression import check_result, check_run, load_verdicts, summarize
from pipeline.farm.schema import MIGRATIONS, SCHEMA_VERSION
from pipeline.farm.store import ResultsStore
from pipeline.farm.verdicts import Verdict
from tests.helpers.records import latency_samples, make_record

BUNDLE_A = "aaaaaaaaaaaaaaaa"
BUNDLE_B = "bbbbbbbbbbbbbbbb"


@pytest.fixture
def store(tmp_path: Path):
    with ResultsStore(tmp_path / "results.sqlite") as s:
        yield s


def add(store: ResultsStore, run_id: int, device: str, seed: int, **kwargs) -> int:
    record = make_record(latency_samples(seed, n=200), target=device, **kwargs)
    return store.record_result(run_id, device, "rpi5", "default", "ok", record, None)


# -------------------------------------------------------------------------------------- store


def test_energy_is_stored_in_its_columns_and_read_back(store: ResultsStore) -> None:
    run_id = store.start_run("farm")
    pi5 = store.get_result(add(store, run_id, "rpi5-a", 1, energy=0.75))
    assert pi5.energy_mj_per_inference == 0.75
    assert pi5.idle_power_w == 2.5 and pi5.power_w == pi5.record.energy.load_power_w > 2.5
    pi4 = store.get_result(add(store, run_id, "rpi4-a", 2, energy=None))
    assert (pi4.energy_mj_per_inference, pi4.power_w, pi4.idle_power_w) == (None, None, None)
    assert "no vcgencmd on PATH" in pi4.record.energy_unavailable
    old_agent = store.get_result(add(store, run_id, "rpi4-b", 3))
    assert old_agent.energy_mj_per_inference is None and "energy" not in old_agent.record.raw


def _insert_v3_rows(path: Path) -> None:
    """Rows as an edgeship at schema version 3 stored them: a Pi 5 record from a newer agent
    (energy inside the record JSON only), an older agent's record, a broken energy object, no record."""
    with_energy = make_record(latency_samples(1, n=30), target="rpi5-a", energy=0.5)
    broken = make_record(latency_samples(2, n=30), target="rpi5-b", energy=0.5)
    broken["energy"]["mj_per_inference"] = "half"
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO runs (id, kind, started_at, status, info) VALUES (7, 'farm', '2026-01-01T00:00:00+00:00', 'finished', '{}')")
    rows = [
        (1, "rpi5-a", "ok", json.dumps(with_energy), 12.0),
        (2, "rpi4-a", "ok", json.dumps(make_record(latency_samples(3, n=30), target="rpi4-a")), 11.0),
        (3, "rpi5-b", "ok", json.dumps(broken), 13.0),
        (4, "rpi4-b", "unreachable", None, None),
        (5, "rpi4-c", "ok", "not json {", 10.0),
    ]
    conn.executemany(
        "INSERT INTO results (id, run_id, device, device_class, profile_name, status, record, p50, created)"
        " VALUES (?, 7, ?, 'rpi', 'default', ?, ?, ?, '2026-01-01T00:00:01+00:00')", rows,
    )
    conn.executemany("INSERT INTO samples VALUES (?, ?, ?)", [(1, 0, 12.0), (1, 1, 12.5), (2, 0, 11.0)])
    conn.execute("INSERT INTO baselines VALUES ('rpi5-a', 'default', 1, '2026-01-02T00:00:00+00:00')")
    conn.execute("INSERT INTO verdicts VALUES (7, 2, '{\"status\": \"pass\"}', '2026-01-01T00:00:02+00:00')")
    conn.execute("INSERT INTO confirmations VALUES (1, 'skipped', '{\"status\": \"skipped\"}', NULL, '2026-01-01T00:00:03+00:00')")
    conn.commit()
    conn.close()


class _StoreAtVersion3(ResultsStore):
    migrations = MIGRATIONS[:3]


def test_a_version_3_store_gains_the_energy_columns_and_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite"
    _StoreAtVersion3(path).close()
    _insert_v3_rows(path)
    with ResultsStore(path) as store:
        assert store.schema_version() == SCHEMA_VERSION == 4
        filled = store._read("SELECT id, energy_mj_per_inference, power_w, idle_power_w FROM results ORDER BY id")
        assert [r[0] for r in filled] == [1, 2, 3, 4, 5]
        assert tuple(filled[4])[1:] == (None, None, None)  # a record that is not JSON does not stop the step
        results = {i: store.get_result(i) for i in (1, 2, 3, 4)}
        # filled from the record JSON the old edgeship kept: nothing the agent measured is lost
        assert results[1].energy_mj_per_inference == 0.5 and results[1].idle_power_w == 2.5
        assert results[1].power_w == pytest.approx(results[1].record.energy.load_power_w)
        assert results[2].energy_mj_per_inference is None and results[2].power_w is None
        assert results[3].energy_mj_per_inference is None  # "half" is not a number
        assert results[4].energy_mj_per_inference is None
        assert store.get_samples(1).tolist() == [12.0, 12.5]
        assert store.baseline("rpi5-a", None, "default").result_id == 1
        assert store.saved_verdicts(7) == [{"status": "pass"}]
        assert store.get_confirmation(1) == {"status": "skipped"}
        new = store.get_result(add(store, store.start_run("farm"), "rpi5-a", 4, energy=0.6))  # and it takes writes
        assert new.energy_mj_per_inference == 0.6
        assert store.integrity_check() == "ok"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(4,)]
    conn.close()


def test_the_oldest_store_upgrades_through_every_step_to_energy(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0][1])
    conn.executescript(
        "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);"
        "INSERT INTO runs (id, kind, started_at, status, info) VALUES (7, 'farm', '2025-01-01T00:00:00+00:00', 'finished', '{}');"
    )
    conn.execute(
        "INSERT INTO results (id, run_id, device, profile_name, status, record, p50, created)"
        " VALUES (3, 7, 'rpi5-a', 'default', 'ok', ?, 12.5, '2025-01-01T00:00:01+00:00')",
        (json.dumps(make_record(latency_samples(1, n=20), energy=1.25)),),
    )
    conn.execute("INSERT INTO samples VALUES (3, 0, 12.0)")
    conn.commit()
    conn.close()
    with ResultsStore(path) as store:
        assert store.schema_version() == 4
        result = store.get_result(3)
        assert result.p50 == 12.5 and result.energy_mj_per_inference == 1.25
        assert store.get_samples(3).tolist() == [12.0]


def test_a_store_that_fails_the_energy_step_is_left_as_it_was(tmp_path: Path) -> None:
    # The runner applies a step in one transaction: a results table that already has one of the
    # new columns (hand-edited) makes ALTER fail, and version 3 with its rows must remain.
    path = tmp_path / "v3.sqlite"
    _StoreAtVersion3(path).close()
    _insert_v3_rows(path)
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE results ADD COLUMN power_w REAL")
    conn.commit()
    conn.close()
    with pytest.raises(Exception, match=r"upgrading the schema from version 3 to 4 failed .*the file is unchanged"):
        ResultsStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(3,)]
    assert "energy_mj_per_inference" not in {r[1] for r in conn.execute("PRAGMA table_info(results)")}
    assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == 5
    conn.close()


# --------------------------------------------------------------------------------- regression


@pytest.fixture
def baselined(store: ResultsStore):
    """An accepted Pi 5 baseline at 1.0 mJ per inference."""
    run_id = store.start_run("farm")
    store.accept_baseline(add(store, run_id, "rpi5-a", 1, bundle_id=BUNDLE_A, energy=1.0))
    store.finish_run(run_id)
    return store, store.start_run("farm")


def _candidate(store: ResultsStore, run_id: int, **kwargs) -> Verdict:
    return check_result(store, add(store, run_id, "rpi5-a", 2, bundle_id=BUNDLE_B, **kwargs))


def test_energy_within_10_percent_passes(baselined) -> None:
    store, run_id = baselined
    verdict = _candidate(store, run_id, energy=1.08)
    assert verdict.status == "pass" and verdict.energy.status == "pass"
    assert verdict.energy.threshold_mj == pytest.approx(0.1) and verdict.energy.delta_mj == pytest.approx(0.08)
    assert verdict.energy_mj_per_inference == 1.08


def test_energy_growth_beyond_10_percent_is_a_regression_named_energy(baselined) -> None:
    store, run_id = baselined
    verdict = _candidate(store, run_id, energy=1.25)
    assert verdict.status == "regression" and verdict.energy.status == "regression"
    assert verdict.latency.status == verdict.memory.status == "pass"  # only energy changed
    assert verdict.regressed_metrics() == ["energy"]
    assert any(r.startswith("energy regression: 1.2500 mJ per inference vs baseline 1.0000 mJ") for r in verdict.reasons)
    assert summarize([verdict]).headline == "1 regression (energy)"


def test_energy_drop_beyond_10_percent_is_an_improvement(baselined) -> None:
    store, run_id = baselined
    verdict = _candidate(store, run_id, energy=0.8)
    assert verdict.status == "improvement" and verdict.energy.status == "improvement"
    assert verdict.reasons == ["energy improvement: -0.2000 mJ per inference"]


@pytest.mark.parametrize("energy, reason", [
    (None, "this run has no energy estimate (no vcgencmd on PATH"),
    ("absent", "this run has no energy estimate (the agent that measured this predates energy estimates)"),
])
def test_energy_is_compared_only_when_both_runs_have_it(baselined, energy, reason: str) -> None:
    store, run_id = baselined
    verdict = _candidate(store, run_id, energy=energy)
    assert verdict.status == "pass" and verdict.energy.status == "not-compared"
    assert verdict.energy.reason.startswith(reason)
    assert any(n.startswith("energy not compared: " + reason) for n in verdict.notes)


def test_a_baseline_without_energy_is_not_compared_and_neither_side_gives_no_note(store: ResultsStore) -> None:
    run_id = store.start_run("farm")
    store.accept_baseline(add(store, run_id, "rpi5-a", 1, energy=None))
    verdict = check_result(store, add(store, run_id, "rpi5-a", 2, energy=9.0))  # 9 mJ: never compared with nothing
    assert verdict.status == "pass" and verdict.energy.status == "not-compared"
    assert verdict.energy.reason.startswith("the baseline has no energy estimate (no vcgencmd")
    store.accept_baseline(add(store, run_id, "rpi4-a", 3, energy=None))
    pi4 = check_result(store, add(store, run_id, "rpi4-a", 4, energy=None))
    assert pi4.energy.status == "not-compared" and not any("energy" in n for n in pi4.notes)


def test_small_estimates_have_an_absolute_floor_and_a_baseline_at_idle_is_not_compared(store: ResultsStore) -> None:
    run_id = store.start_run("farm")
    store.accept_baseline(add(store, run_id, "tiny", 1, energy=0.02))
    assert check_result(store, add(store, run_id, "tiny", 2, energy=0.029)).status == "pass"  # +0.009 < max(0.002, 0.01)
    assert check_result(store, add(store, run_id, "tiny", 2, energy=0.031)).status == "regression"
    store.accept_baseline(add(store, run_id, "idle", 3, energy=-0.01), force=True)
    verdict = check_result(store, add(store, run_id, "idle", 4, energy=0.5))
    assert verdict.energy.status == "not-compared" and "not above idle" in verdict.energy.reason


def test_the_inventory_can_widen_the_energy_threshold(baselined) -> None:
    store, run_id = baselined
    policy = RegressionSettings(energy_rel=0.3).to_policy()
    assert policy == Policy(energy_rel=0.3)
    rid = add(store, run_id, "rpi5-a", 2, bundle_id=BUNDLE_B, energy=1.25)
    assert check_result(store, rid, policy=policy).status == "pass"
    assert check_result(store, rid).status == "regression"


def test_saved_verdicts_keep_the_energy_check(baselined) -> None:
    store, run_id = baselined
    add(store, run_id, "rpi5-a", 2, bundle_id=BUNDLE_B, energy=1.25)
    [checked] = check_run(store, run_id)
    [loaded] = load_verdicts(store, run_id)
    assert loaded.energy == checked.energy and loaded.energy.status == "regression"
    assert loaded.regressed_metrics() == ["energy"] and loaded.energy_mj_per_inference == 1.25
    old = {k: v for k, v in checked.to_dict().items() if k not in ("energy", "energy_mj_per_inference")}
    assert Verdict.from_dict(old).energy is None  # a verdict saved before energy still loads

"""The results store's schema: every table, and the numbered steps that build it.

Version 4 (``schema_version`` holds the applied version, :data:`MIGRATIONS` the steps; the shared
runner in :mod:`pipeline.sqlite_store` applies them)
-----------------------------------------------------------------------------------------------
runs       id, kind farm|profile, started_at, finished_at, status running|finished|aborted,
           inventory, profile_name, info (json: git commit, tool versions), host, pid, pid_start,
           heartbeat_at
devices    name PK, target_file, device_class, tags (json), emulated, last_seen
bundles    bundle_id PK, profile_name, manifest (json or NULL until registered), created
results    id, run_id -> runs, device, device_class, bundle_id -> bundles, profile_name,
           status ok|unreachable|failed|timeout|invalid|busy, error, record_path, record (json), p50,
           mean, peak_rss_mb, top1, agreement, throttled, emulated, created, energy_mj_per_inference,
           power_w, idle_power_w                   (energy: NULL unless the device could tell)
samples    result_id -> results, idx, latency_ms           (raw timed samples, PK(result_id, idx))
baselines  device_key (device name or device class), profile_name, result_id -> results,
           accepted_at, PK(device_key, profile_name)
noise      device, profile_name, floor, n_runs, updated    (PK(device, profile_name))
verdicts   run_id -> runs, result_id -> results, verdict (json), created   (PK(run_id, result_id))

confirmations  result_id PK -> results, status, check_json (the ConfirmationCheck), record (json: the
           agent's whole A/B record, every sample), created

Version 2 adds the result status ``busy`` (a labgrid place someone else held for the whole wait).
Version 3 adds ``confirmations``: the device's interleaved A/B for a result whose latency was suspect.
Version 4 adds the energy columns of ``results`` (the record's ``energy``: mJ per inference above
idle, load and idle board power in W), filled for rows already stored from the record JSON they keep.
"""

from __future__ import annotations

import re

from pipeline.sqlite_store import Migration

SCHEMA_VERSION = 4
RUN_KINDS = ("farm", "profile")
RUN_STATUSES = ("running", "finished", "aborted")
RESULT_STATUSES = ("ok", "unreachable", "failed", "timeout", "invalid", "busy")

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


def _v1_table(name: str) -> str:
    """The CREATE TABLE statement of ``name`` in version 1 (frozen text, so this never changes)."""
    match = re.search(rf"CREATE TABLE {name} \(.*?\n\)[^;]*;", _SCHEMA_V1, flags=re.DOTALL)
    assert match is not None, name
    return match.group(0)


def _rebuilt(name: str, create: str) -> str:
    return f"ALTER TABLE {name} RENAME TO {name}_v1;\n{create}\nINSERT INTO {name} SELECT * FROM {name}_v1;\n"


# SQLite cannot change a CHECK constraint in place, so the results table is rebuilt, inside the
# runner's one transaction with foreign keys on. Renaming the old results table moves its children's
# references (samples, baselines, verdicts) to the renamed table, so each child is rebuilt too,
# referencing the new one; only then is the old table dropped, which no child references any more,
# so no ON DELETE CASCADE reaches the samples. Indexes go with the old table and are made again.
_V2_RESULT_BUSY = (
    _rebuilt("results", _v1_table("results").replace("'timeout', 'invalid')", "'timeout', 'invalid', 'busy')"))
    + "".join(_rebuilt(child, _v1_table(child)) + f"DROP TABLE {child}_v1;\n" for child in ("samples", "baselines", "verdicts"))
    + """DROP TABLE results_v1;
CREATE INDEX results_run ON results(run_id);
CREATE INDEX results_history ON results(device, profile_name, id);
"""
)
assert "'busy'" in _V2_RESULT_BUSY

# (version, SQL script). Append new steps; never edit a released one.
_V3_CONFIRMATIONS = """
CREATE TABLE confirmations (
    result_id     INTEGER PRIMARY KEY REFERENCES results(id),
    status        TEXT NOT NULL CHECK (status IN ('confirmed', 'not-confirmed', 'unavailable', 'invalid', 'skipped')),
    check_json    TEXT NOT NULL,
    record        TEXT,
    created       TEXT NOT NULL
);
"""


def _from_record(path: str) -> str:
    """The record JSON's number at ``path``, NULL when the record is not JSON or holds no number there."""
    return (
        f"CASE WHEN record IS NOT NULL AND json_valid(record) AND json_type(record, '{path}') IN ('real', 'integer')"
        f" THEN json_extract(record, '{path}') END"
    )


# Columns are added (ALTER TABLE ADD COLUMN keeps every row and every reference to the table), then
# filled from the stored record: a newer agent's record stored by an older edgeship already carries
# its ``energy`` object, so nothing it measured is lost.
_V4_ENERGY = f"""
ALTER TABLE results ADD COLUMN energy_mj_per_inference REAL;
ALTER TABLE results ADD COLUMN power_w REAL;
ALTER TABLE results ADD COLUMN idle_power_w REAL;
UPDATE results SET
    energy_mj_per_inference = {_from_record('$.energy.mj_per_inference')},
    power_w = {_from_record('$.energy.load_power_w')},
    idle_power_w = {_from_record('$.energy.idle_power_w')}
WHERE record IS NOT NULL;
"""

MIGRATIONS: list[Migration] = [(1, _SCHEMA_V1), (2, _V2_RESULT_BUSY), (3, _V3_CONFIRMATIONS), (4, _V4_ENERGY)]

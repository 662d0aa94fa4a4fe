"""The shared SQLite store base: migration scripts are split the way SQLite parses them."""

from __future__ import annotations

import sqlite3

import pytest

from pipeline.errors import EdgeshipError
from pipeline.sqlite_store import SQLiteStore, sql_statements


class NotesStore(SQLiteStore):
    file_name = "notes.sqlite"
    what = "Notes store"
    migrations = [
        (1, "CREATE TABLE notes (text TEXT NOT NULL); INSERT INTO notes VALUES ('a; b');"),
        (
            2,
            """
            -- a comment; with a semicolon
            CREATE TABLE counts (n INTEGER NOT NULL);
            INSERT INTO counts VALUES (0);
            CREATE TRIGGER count_notes AFTER INSERT ON notes BEGIN
                UPDATE counts SET n = n + 1;
            END;
            """,
        ),
    ]


def test_semicolons_in_strings_comments_and_triggers_stay_in_their_statement() -> None:
    statements = list(sql_statements(NotesStore.migrations[1][1]))
    assert len(statements) == 3 and statements[2].endswith("END;")
    assert list(sql_statements("SELECT 'x;y'; SELECT 2")) == ["SELECT 'x;y';", "SELECT 2;"]


def test_migrations_apply_in_order_on_real_sqlite(tmp_path) -> None:
    path = tmp_path / "notes.sqlite"
    with NotesStore(path) as store:
        assert store.schema_version() == 2
        with store._write() as conn:
            conn.execute("INSERT INTO notes VALUES ('c')")
        assert [r[0] for r in store._read("SELECT text FROM notes ORDER BY rowid")] == ["a; b", "c"]
        assert store._read("SELECT n FROM counts")[0][0] == 1  # the trigger body ran as one statement
    with NotesStore(path) as store:  # reopening applies nothing twice
        assert store.schema_version() == 2 and len(store._read("SELECT * FROM notes")) == 2
    assert sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchall() == [(2,)]


def test_an_unterminated_script_is_left_for_sqlite_to_refuse(tmp_path) -> None:
    class Broken(NotesStore):
        migrations = [(1, "CREATE TABLE t (x TEXT DEFAULT 'open;")]

    statements = list(sql_statements(Broken.migrations[0][1]))
    assert len(statements) == 1 and statements[0].startswith("CREATE TABLE t")
    with pytest.raises(EdgeshipError, match=r"b.sqlite: upgrading the schema from version 0 to 1 failed"):
        Broken(tmp_path / "b.sqlite")

"""The SQLite plumbing every edgeship store shares: WAL, busy timeout, one lock, explicit transactions.

A subclass names its file and error type and lists its schema as ``migrations``: numbered SQL
scripts applied in order, in one transaction, with the applied version kept in a ``schema_version``
table.
Everything a write touches goes through ``_write``, so it commits whole or not at all.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence, Tuple, Type, Union

from pipeline.errors import EdgeshipError
from pipeline.paths import results_dir

logger = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT_S = 30.0
# (version, SQL script): append new steps, never edit a released one.
Migration = Tuple[int, str]


def sql_statements(script: str) -> Iterator[str]:
    """The statements of ``script`` one by one.

    ``executescript`` would COMMIT the caller's transaction first, and a bare split on ";" breaks
    string literals and trigger bodies; ``sqlite3.complete_statement`` knows where each one ends.
    """
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending.strip()
            pending = ""
    if pending.strip(" \t\r\n;"):
        yield pending  # unterminated (an open string or trigger): let SQLite name the error


def _busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock, so waiting may help."""
    return "locked" in str(exc) or "busy" in str(exc)


class SQLiteStore:
    """Open (creating or migrating as needed) ``path``, default ``results_dir()/file_name``."""

    file_name: ClassVar[str]
    what: ClassVar[str]  # "Results store", used in every error message
    error: ClassVar[Type[EdgeshipError]] = EdgeshipError
    migrations: ClassVar[Sequence[Migration]] = ()
    # What to tell the user whose file a newer edgeship wrote.
    newer_hint: ClassVar[str] = "upgrade edgeship, or move the file aside to start a new one"

    def __init__(self, path: Union[str, Path, None] = None, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S):
        self.path = Path(path) if path is not None else results_dir() / self.file_name
        self.busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
            self._conn = sqlite3.connect(str(self.path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            mode = self._switch_to_wal()
            if str(mode).lower() != "wal":
                raise self.error(f"{self.what} {self.path}: could not switch to WAL journal mode (got {mode!r}).")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except BaseException as exc:
            if hasattr(self, "_conn"):
                self._conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise self.error(f"{self.what} {self.path} cannot be opened: {exc}.") from exc
            raise

    def _switch_to_wal(self) -> str:
        """Set WAL mode, retrying while another process holds the lock.

        SQLite answers ``journal_mode = WAL`` with SQLITE_BUSY at once, without calling the busy
        handler, when another connection is creating or recovering the same file, so two shards
        opening a new store together would otherwise fail. The mode is persistent: once any
        process has switched, the pragma is a read.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.01
        while True:
            try:
                return str(self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _migrate(self) -> None:
        """Bring the file to the newest of ``migrations`` in one transaction, so a failed step
        leaves the file exactly as it was; refuse a file written by a newer edgeship."""
        latest = max((version for version, _ in self.migrations), default=0)
        with self._write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
            if current > latest:
                raise self.error(
                    f"{self.what} {self.path} has schema version {current}, newer than this edgeship understands "
                    f"({latest}); {self.newer_hint}."
                )
            for version, script in self.migrations:
                if version <= current:
                    continue
                try:
                    for statement in sql_statements(script):
                        conn.execute(statement)
                except sqlite3.DatabaseError as exc:
                    raise self.error(
                        f"{self.what} {self.path}: upgrading the schema from version {current} to {version} failed "
                        f"({exc}); the file is unchanged."
                    ) from exc
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                logger.info("%s %s: schema version %d -> %d", self.what, self.path, current, version)
                current = version

    def schema_version(self) -> int:
        return int(self._read("SELECT max(version) FROM schema_version")[0][0] or 0)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it commits or none of it does."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _busy(exc):
                    raise self.error(
                        f"{self.what} {self.path} stayed locked by another process for longer than "
                        f"{self.busy_timeout_s:.0f} s ({exc}); is another edgeship run stuck?"
                    ) from exc
                raise
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

"""The SQLite plumbing every edgeship store shares: WAL, busy timeout, one lock, explicit transactions.

A subclass names its file and error type and creates its tables in ``_migrate``; everything a
write touches goes through ``_write``, so it commits whole or not at all.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence, Type, Union

from pipeline.errors import EdgeshipError
from pipeline.paths import results_dir

DEFAULT_BUSY_TIMEOUT_S = 30.0


def _busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock, so waiting may help."""
    return "locked" in str(exc) or "busy" in str(exc)


class SQLiteStore:
    """Open (creating or migrating as needed) ``path``, default ``results_dir()/file_name``."""

    file_name: ClassVar[str]
    what: ClassVar[str]  # "Results store", used in every error message
    error: ClassVar[Type[EdgeshipError]] = EdgeshipError

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
        except sqlite3.DatabaseError as exc:
            raise self.error(f"{self.what} {self.path} cannot be opened: {exc}.") from exc

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
        """Create or upgrade the tables (inside ``self._write()``)."""

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

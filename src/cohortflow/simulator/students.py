"""The students source: a SQLite table written one committed row at a time.

Like the upstream, the database keeps SQLite's default rollback journal (no
WAL), so a reader's open read transaction really blocks the writer's commit.
The writer waits (``busy_timeout``) and then keeps retrying the very same
statement, so a slow reader delays a student but never loses one; only when
the generator is stopping does it give up, after a grace period, on a student
that was never committed (and that no log line has named as existing yet).

With ``--edit-rate`` the writer also renames, moves and deletes students (one
commit each), and :meth:`StudentsWriter.crash_mid_transaction` reproduces a
writer killed in the middle of a transaction: the hot journal it leaves is
what readers must recover from.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from cohortflow.contract import STUDENTS_TABLE_DDL

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT_MS = 5000
STOP_GRACE_S = 5.0
_INSERT = "INSERT INTO students (name, batch_id, created_at) VALUES (?, ?, ?)"
_HIGHEST_ID = """SELECT max(coalesce((SELECT max(id) FROM students), 0),
    coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'students'), 0))"""
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class StudentNotWritten(Exception):
    """The writer gave up on a student because the generator is stopping."""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in _BUSY_CODES or "locked" in str(exc)


class StudentsWriter:
    """Appends students to ``students.db`` through its own connection."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        stopping: threading.Event | None = None,
    ) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self._conn.execute(STUDENTS_TABLE_DDL)
        self._stopping = stopping or threading.Event()
        self.retries = 0
        """How many times a statement met a lock and was retried (for tests)."""

    def close(self) -> None:
        """Close the connection (rolls back nothing: every student is committed)."""
        self._conn.close()

    def max_id(self) -> int:
        """The highest student id ever written (0 for none), even when that student was deleted."""
        row = self._retry(lambda: self._conn.execute(_HIGHEST_ID).fetchone())
        return int(row[0] or 0)

    def max_batch_id(self) -> int:
        """The highest batch id any student belongs to (0 for none)."""
        query = "SELECT max(batch_id) FROM students"
        return int(self._retry(lambda: self._conn.execute(query).fetchone())[0] or 0)

    def last_created_at(self) -> str | None:
        """The newest ``created_at`` (None for an empty table)."""
        query = "SELECT created_at FROM students ORDER BY id DESC LIMIT 1"
        row = self._retry(lambda: self._conn.execute(query).fetchone())
        return None if row is None else str(row[0])

    def add(self, name: str, batch_id: int, created_at: str) -> int:
        """Insert and commit one student; return its id.

        Raises:
            StudentNotWritten: the generator is stopping and the lock did not clear.

        """
        self._retry(lambda: self._conn.execute("BEGIN IMMEDIATE"))
        try:
            cursor = self._retry(lambda: self._conn.execute(_INSERT, (name, batch_id, created_at)))
            self._retry(lambda: self._conn.execute("COMMIT"))
        except BaseException:
            self._rollback()
            raise
        return int(cursor.lastrowid or 0)

    def rename(self, student_id: int, name: str) -> None:
        """Give a student another name (one commit)."""
        self._commit("UPDATE students SET name = ? WHERE id = ?", (name, student_id))

    def move(self, student_id: int, batch_id: int) -> None:
        """Move a student to another batch (one commit)."""
        self._commit("UPDATE students SET batch_id = ? WHERE id = ?", (batch_id, student_id))

    def delete(self, student_id: int) -> None:
        """Delete a student (one commit; AUTOINCREMENT never gives its id out again)."""
        self._commit("DELETE FROM students WHERE id = ?", (student_id,))

    def _commit(self, sql: str, params: tuple[Any, ...]) -> None:
        self._retry(lambda: self._conn.execute("BEGIN IMMEDIATE"))
        try:
            self._retry(lambda: self._conn.execute(sql, params))
            self._retry(lambda: self._conn.execute("COMMIT"))
        except BaseException:
            self._rollback()
            raise

    def crash_mid_transaction(self) -> NoReturn:
        """Rewrite every student in a transaction, spill it into the file, and die by SIGKILL.

        A one-page cache makes SQLite write changed pages into the database file before
        any commit (the originals are in the journal first), so the file is left
        mid-transaction beside a *hot journal* that the next reader must roll back.
        """
        self._conn.execute("PRAGMA cache_size = 1")
        self._retry(lambda: self._conn.execute("BEGIN IMMEDIATE"))
        self._conn.execute("UPDATE students SET name = name || ' (never committed)'")
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError  # not reached: SIGKILL cannot be caught

    def add_many(self, rows: Iterable[tuple[str, int, str]]) -> None:
        """Insert many students in one transaction (history preload)."""
        self._retry(lambda: self._conn.execute("BEGIN IMMEDIATE"))
        try:
            self._conn.executemany(_INSERT, rows)
            self._retry(lambda: self._conn.execute("COMMIT"))
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _retry(self, statement: Callable[[], T]) -> T:
        """Run ``statement`` until no lock stops it (each try waits ``busy_timeout``)."""
        stop_seen: float | None = None
        delay = 0.01
        while True:
            try:
                return statement()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                if self._stopping.is_set():
                    stop_seen = stop_seen or time.monotonic()
                    if time.monotonic() - stop_seen > STOP_GRACE_S:
                        msg = "students.db stayed locked while stopping"
                        raise StudentNotWritten(msg) from exc
            self.retries += 1
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

"""The upstream students table, read by rowid through short read-only queries.

Each read opens the file read-only, runs two indexed queries and closes it,
so the upstream writer never waits on us for more than a few milliseconds.
While idle we do not even query: SQLite bumps the file change counter in the
header (bytes 24-27) at every commit in rollback-journal mode, and the -wal
file changes in WAL mode; an unchanged fingerprint after an empty read skips
the query (a real one still runs every ``recheck_seconds``).
``AUTOINCREMENT`` ids are committed in order by the single writer, so
"id > cursor" never skips a row.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cohortflow.contract import format_timestamp, parse_timestamp
from cohortflow.errors import SourceLocked, SourceReset, SourceUnavailable
from cohortflow.records import StudentRecord


@dataclass(frozen=True)
class StudentsCursor:
    """The last student id read, and its created_at to recognise the same table later."""

    last_id: int = 0
    last_created_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for pipeline_state."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> StudentsCursor:
        """Rebuild from pipeline_state (None means: from the start)."""
        return cls(**data) if data else cls()


@dataclass(frozen=True)
class StudentsPage:
    """New students, rows that break the contract, and the cursor past both."""

    students: list[StudentRecord]
    rejects: list[tuple[str, str, str]]
    cursor: StudentsCursor


class StudentsTable:
    """The upstream ``students`` table in a SQLite file we only read."""

    def __init__(
        self, path: str | Path, page_size: int = 20_000, busy_ms: int = 2000, recheck_seconds: float = 1.0
    ) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.page_size = page_size
        self.busy_ms = busy_ms
        self.recheck_seconds = recheck_seconds
        self._idle_at: tuple[object, ...] | None = None
        self._idle_since = 0.0

    def _fingerprint(self) -> tuple[object, ...] | None:
        """What changes whenever a writer commits (None when the file is absent)."""
        try:
            with open(self.path, "rb") as f:
                stat = os.fstat(f.fileno())
                counter = os.pread(f.fileno(), 4, 24)
        except FileNotFoundError:
            return None
        try:
            wal = os.stat(f"{self.path}-wal")
            wal_state: tuple[int, int] | None = (wal.st_size, wal.st_mtime_ns)
        except FileNotFoundError:
            wal_state = None
        return (stat.st_ino, stat.st_size, counter, wal_state)

    def _still_idle(self, fingerprint: tuple[object, ...] | None) -> bool:
        """True when nothing was committed since a read that found no new students."""
        recent = time.monotonic() - self._idle_since < self.recheck_seconds
        return fingerprint is not None and fingerprint == self._idle_at and recent

    def _connect(self) -> sqlite3.Connection | None:
        if not self.path.exists():
            return None
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=self.busy_ms / 1000
            )
        except sqlite3.Error as exc:
            msg = f"cannot open `{self.name}`: {exc}"
            raise SourceUnavailable(msg) from exc
        return conn

    def read(self, cursor: StudentsCursor) -> StudentsPage | None:
        """Students with id above the cursor (one page), or None when there are none."""
        fingerprint = self._fingerprint()  # taken before the query: a later commit changes it
        if self._still_idle(fingerprint):
            return None
        conn = self._connect()
        if conn is None:
            if cursor.last_id:
                self._reset(cursor, "the file no longer exists")
            return None
        try:
            rows = self._query(conn, cursor)
        finally:
            conn.close()
        if not rows:
            self._idle_at, self._idle_since = fingerprint, time.monotonic()
            return None
        self._idle_at = None
        return self._page(rows)

    def latest(self, cursor: StudentsCursor, max_rows: int) -> StudentsCursor:
        """The cursor after at most ``max_rows`` more students (checks the table was not reset)."""
        conn = self._connect()
        if conn is None:
            if cursor.last_id:
                self._reset(cursor, "the file no longer exists")
            return cursor
        try:
            self._check_cursor_row(conn, cursor)
            row = (
                conn.execute(
                    "SELECT id, created_at FROM students WHERE id > ? ORDER BY id LIMIT 1 OFFSET ?",
                    (cursor.last_id, max_rows - 1),
                ).fetchone()
                or conn.execute(
                    "SELECT id, created_at FROM students WHERE id > ? ORDER BY id DESC LIMIT 1",
                    (cursor.last_id,),
                ).fetchone()
            )
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc) and not cursor.last_id:
                return cursor
            raise _unavailable(self.name, exc) from exc
        finally:
            conn.close()
        return StudentsCursor(int(row[0]), _canonical(row[1])) if row else cursor

    def between(self, after_id: int, upto_id: int) -> StudentsPage | None:
        """The students with ``after_id < id <= upto_id`` (for a replayable range)."""
        conn = self._connect()
        if conn is None:
            return None
        try:
            rows = conn.execute(
                "SELECT id, name, batch_id, created_at FROM students WHERE id > ? AND id <= ? ORDER BY id",
                (after_id, upto_id),
            ).fetchall()
        finally:
            conn.close()
        return self._page(rows) if rows else None

    def max_id(self) -> int:
        """The highest student id now in the table (0 when empty or absent)."""
        conn = self._connect()
        if conn is None:
            return 0
        try:
            row = conn.execute("SELECT max(id) FROM students").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise _unavailable(self.name, exc) from exc  # locked: "0 students" would be a lie
        finally:
            conn.close()
        return int(row[0] or 0)

    def _query(self, conn: sqlite3.Connection, cursor: StudentsCursor) -> list[tuple[Any, ...]]:
        try:
            self._check_cursor_row(conn, cursor)
            return conn.execute(
                "SELECT id, name, batch_id, created_at FROM students WHERE id > ? ORDER BY id LIMIT ?",
                (cursor.last_id, self.page_size),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc) and not cursor.last_id:
                return []
            raise _unavailable(self.name, exc) from exc

    def _check_cursor_row(self, conn: sqlite3.Connection, cursor: StudentsCursor) -> None:
        """The last student we read must still be there, unchanged."""
        if not cursor.last_id:
            return
        found = conn.execute("SELECT created_at FROM students WHERE id = ?", (cursor.last_id,)).fetchone()
        if found is None:
            self._reset(cursor, f"student {cursor.last_id} vanished")
        elif _canonical(found[0]) != cursor.last_created_at:
            self._reset(cursor, f"student {cursor.last_id} was rewritten")

    def _page(self, rows: list[tuple[Any, ...]]) -> StudentsPage:
        students: list[StudentRecord] = []
        rejects: list[tuple[str, str, str]] = []
        for row in rows:
            record, reason = _validate(row)
            if record is None:
                rejects.append((f"{self.name}#id={row[0]}", repr(row), reason))
            else:
                students.append(record)
        last_id, last_created = rows[-1][0], _canonical(rows[-1][3])
        return StudentsPage(students, rejects, StudentsCursor(int(last_id), last_created))

    def _reset(self, cursor: StudentsCursor, what: str) -> None:
        raise SourceReset(self.name, f"{what} (we had read up to id {cursor.last_id})")


def _unavailable(name: str, exc: sqlite3.Error) -> SourceUnavailable:
    """A read error as ours: the writer's lock past our busy timeout is SourceLocked."""
    busy = getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return (SourceLocked if busy else SourceUnavailable)(f"cannot read `{name}`: {exc}")


_CANONICAL_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")


def _canonical(value: Any) -> str | None:
    """A created_at in the one format we store, or None when it cannot be read."""
    if isinstance(value, str) and _CANONICAL_TIME.fullmatch(value):
        return value  # already canonical: the common case, no datetime round trip
    try:
        return format_timestamp(parse_timestamp(str(value)))
    except ValueError:
        return None


def _validate(row: tuple[Any, ...]) -> tuple[StudentRecord | None, str]:
    student_id, name, batch_id, created_at = row
    if not isinstance(name, str) or not name.strip():
        return None, "bad_name"
    if not isinstance(batch_id, int) or batch_id < 1:
        return None, "bad_batch_id"
    when = _canonical(created_at)
    if when is None:
        return None, "bad_created_at"
    return StudentRecord(int(student_id), name, batch_id, when), ""

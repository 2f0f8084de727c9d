"""The upstream students table, read by rowid through short queries that never write.

Each read opens the file, runs a few indexed queries and closes it, so the
upstream writer never waits on us for more than a few milliseconds. The
connection is a normal one in ``query_only`` mode (see
:mod:`cohortflow.sources.sqlite_reader`): like any SQLite reader it recovers a
hot journal left by a writer that crashed. While idle we do not even query:
SQLite bumps the file change counter in the header (bytes 24-27) at every
commit in rollback-journal mode, and the -wal file changes in WAL mode; an
unchanged fingerprint after an empty read skips the query (a real one still
runs every ``recheck_seconds``). ``AUTOINCREMENT`` ids are committed in order
by the single writer, so "id > cursor" never skips a row.

Rows at or below the cursor that are later edited or deleted are the business
of :mod:`cohortflow.sources.student_changes`; this reader only notices when the
cursor's own row changed and asks ``on_cursor_row_changed`` what that means
(by default: a reset).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cohortflow.contract import format_timestamp, parse_timestamp
from cohortflow.errors import ConfigError, SourceMissing, SourceReset
from cohortflow.records import StudentRecord
from cohortflow.sources.sqlite_reader import check_file, connect_for_reading, wrap

OPTION = "--students-db"
CursorRowHandler = Callable[[sqlite3.Connection, "StudentsCursor", str], None]
_D = "[0-9]"
# Python's whitespace (what str.strip removes), for SQLite's trim().
_BLANKS = ", ".join(str(c) for c in range(0x110000) if chr(c).isspace())
# Whether the contract surely accepts a row, decided by SQLite without a Python call per
# row; rows it does not vouch for go through `_validate`, which is the rule.
_FITS = (
    f"typeof(name) = 'text' AND trim(name, char({_BLANKS})) <> '' "
    "AND typeof(batch_id) = 'integer' AND batch_id >= 1 AND typeof(created_at) = 'text' "
    f"AND created_at GLOB '{_D * 4}-{_D * 2}-{_D * 2} {_D * 2}:{_D * 2}:{_D * 2}.{_D * 6}'"
)
#: The columns `validate_rows` takes: the row, then whether SQLite vouches for it.
SELECT_ROWS = f"SELECT id, name, batch_id, created_at, {_FITS} FROM students"


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
        self.on_cursor_row_changed: CursorRowHandler = self._cursor_row_reset
        self._idle_at: tuple[object, ...] | None = None  # (cursor, file fingerprint) of an empty read
        self._idle_since = 0.0

    def check(self, *, must_exist: bool = False) -> None:
        """Raise ConfigError at once for a path that cannot be a students table.

        A file that is locked or blocked right now is left to the reads (they retry it): this
        check does not wait for locks.
        """
        if not check_file(self.path, OPTION, must_exist=must_exist):
            return
        try:
            with self._open(busy_ms=0):
                pass
        except sqlite3.Error as exc:
            error = wrap(self.path, exc)
            if isinstance(error, ConfigError):
                raise error from exc

    def fingerprint(self) -> tuple[object, ...] | None:
        """What changes whenever a writer commits (None when the file is absent)."""
        try:
            with open(self.path, "rb") as f:
                stat = os.fstat(f.fileno())
                counter = os.pread(f.fileno(), 4, 24)
        except (FileNotFoundError, IsADirectoryError):
            return None
        try:
            wal = os.stat(f"{self.path}-wal")
            wal_state: tuple[int, int] | None = (wal.st_size, wal.st_mtime_ns)
        except FileNotFoundError:
            wal_state = None
        return (stat.st_ino, stat.st_size, counter, wal_state)

    def _still_idle(self, fingerprint: tuple[object, ...] | None) -> bool:
        """True when nothing was committed since a read that found no new students.

        The key holds the cursor too: after a rebuild (the cursor back at 0) the table is read again.
        """
        recent = time.monotonic() - self._idle_since < self.recheck_seconds
        return fingerprint is not None and fingerprint == self._idle_at and recent

    @contextmanager
    def session(self) -> Iterator[sqlite3.Connection | None]:
        """A short-lived reading connection; None while the file or its table does not exist yet.

        SQLite errors become ours, by result code; the engine's health board retries a locked,
        blocked or missing file with backoff and says so once per change.
        """
        try:
            with self._open() as conn:
                yield conn
        except sqlite3.Error as exc:
            raise wrap(self.path, exc) from exc

    @contextmanager
    def _open(self, busy_ms: int | None = None) -> Iterator[sqlite3.Connection | None]:
        if not check_file(self.path, OPTION, must_exist=False):
            yield None
            return
        conn = connect_for_reading(self.path, self.busy_ms if busy_ms is None else busy_ms)
        try:
            yield conn if self._has_table(conn) else None
        finally:
            conn.close()

    def _has_table(self, conn: sqlite3.Connection) -> bool:
        """Whether ``students`` exists; a database with other tables but not this one is a mistake."""
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if "students" in tables or not tables:  # no tables at all: its writer is creating it
            return "students" in tables
        msg = f"{OPTION} `{self.name}` has no `students` table (it has {', '.join(sorted(tables)[:5])})"
        raise ConfigError(msg)

    def _absent(self, cursor: StudentsCursor) -> None:
        """The file or its table is not there (yet, or any more): wait for it."""
        gone = f" (we had read up to id {cursor.last_id})" if cursor.last_id else ""
        msg = f"`{self.name}` does not exist{gone}; waiting for it"
        raise SourceMissing(msg)

    def read(self, cursor: StudentsCursor) -> StudentsPage | None:
        """Students with id above the cursor (one page), or None when there are none."""
        file = self.fingerprint()  # taken before the query: a later commit changes it
        fingerprint = None if file is None else (cursor, *file)
        if self._still_idle(fingerprint):
            return None
        with self.session() as conn:
            if conn is None:
                self._absent(cursor)
                return None
            self._check_cursor_row(conn, cursor)
            query = f"{SELECT_ROWS} WHERE id > ? ORDER BY id LIMIT ?"
            rows = conn.execute(query, (cursor.last_id, self.page_size)).fetchall()
        if not rows:
            self._idle_at, self._idle_since = fingerprint, time.monotonic()
            return None
        self._idle_at = None
        return self._page(rows)

    def latest(self, cursor: StudentsCursor, max_rows: int) -> StudentsCursor:
        """The cursor after at most ``max_rows`` more students (checks the table was not reset)."""
        with self.session() as conn:
            if conn is None:
                self._absent(cursor)
                return cursor
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
        return StudentsCursor(int(row[0]), canonical(row[1])) if row else cursor

    def between(self, after_id: int, upto_id: int) -> StudentsPage | None:
        """The students with ``after_id < id <= upto_id`` (for a replayable range)."""
        with self.session() as conn:
            if conn is None:
                return None
            query = f"{SELECT_ROWS} WHERE id > ? AND id <= ? ORDER BY id"
            rows = conn.execute(query, (after_id, upto_id)).fetchall()
        return self._page(rows) if rows else None

    def max_id(self) -> int:
        """The highest student id now in the table (0 when empty or absent)."""
        with self.session() as conn:
            row = None if conn is None else conn.execute("SELECT max(id) FROM students").fetchone()
        return int(row[0] or 0) if row else 0

    def _check_cursor_row(self, conn: sqlite3.Connection, cursor: StudentsCursor) -> None:
        """The last student we read should still be there, unchanged; if not, ask what it means."""
        if not cursor.last_id:
            return
        found = conn.execute("SELECT created_at FROM students WHERE id = ?", (cursor.last_id,)).fetchone()
        if found is None:
            self.on_cursor_row_changed(conn, cursor, f"student {cursor.last_id} vanished")
        elif canonical(found[0]) != cursor.last_created_at:
            self.on_cursor_row_changed(conn, cursor, f"student {cursor.last_id} was rewritten")

    def _cursor_row_reset(self, conn: sqlite3.Connection, cursor: StudentsCursor, what: str) -> None:
        """Without a change detector (the Spark engine) a changed cursor row means a reset."""
        raise SourceReset(self.name, f"{what} (we had read up to id {cursor.last_id})")

    def _page(self, rows: list[tuple[Any, ...]]) -> StudentsPage:
        students, rejects = validate_rows(self.name, rows)
        last_id, last_created = rows[-1][0], canonical(rows[-1][3])
        return StudentsPage(students, rejects, StudentsCursor(int(last_id), last_created))


_CANONICAL_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")


def canonical(value: Any) -> str | None:
    """A created_at in the one format we store, or None when it cannot be read."""
    if isinstance(value, str) and _CANONICAL_TIME.fullmatch(value):
        return value  # already canonical: the common case, no datetime round trip
    try:
        return format_timestamp(parse_timestamp(str(value)))
    except ValueError:
        return None


def validate_rows(
    name: str, rows: list[tuple[Any, ...]]
) -> tuple[list[StudentRecord], list[tuple[str, str, str]]]:
    """Rows of :data:`SELECT_ROWS` as records; those breaking the contract as ``(location, raw, reason)``."""
    if all(row[4] for row in rows):  # the common case: no Python call per row
        return [StudentRecord(*row[:4]) for row in rows], []
    students: list[StudentRecord] = []
    rejects: list[tuple[str, str, str]] = []
    for row in rows:
        record, reason = (StudentRecord(*row[:4]), "") if row[4] else _validate(row[:4])
        if record is None:
            rejects.append((f"{name}#id={row[0]}", repr(row[:4]), reason))
        else:
            students.append(record)
    return students, rejects


def _validate(row: tuple[Any, ...]) -> tuple[StudentRecord | None, str]:
    student_id, name, batch_id, created_at = row
    if not isinstance(name, str) or not name.strip():
        return None, "bad_name"
    if not isinstance(batch_id, int) or batch_id < 1:
        return None, "bad_batch_id"
    when = canonical(created_at)
    if when is None:
        return None, "bad_created_at"
    return StudentRecord(int(student_id), name, batch_id, when), ""

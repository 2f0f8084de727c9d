"""Students edited or deleted after we read them: found by range checksums, applied as data.

The append path reads ids above the cursor; rows at or below it can still be
renamed, moved to another batch or deleted upstream. This detector walks the
ingested ids in ranges of ``RANGE_IDS`` and asks SQLite for a digest of each
range (one short query per range: the writer never waits on us). A range whose
digest differs from the one remembered when it was last in sync is re-read and
compared row by row with what the warehouse holds; the differences (upserts,
deletes) are staged in the tick's transaction and the new digests are
remembered only once that commits.

Cost is bounded: a full pass is spread over ``pass_seconds`` (4 s: a few
ranges per tick, so an edit is found within about 5 s), stretched so that
checking takes at most :data:`CPU_SHARE` of the time (a step that took 20 ms
waits 0.4 s for the next: at 200k students edits are found within ~8 s, the
issue's bound being 10 s), and a pass is
skipped while the file has not changed since the last clean one (an idle
source costs a ``stat`` per step). Digests live in memory: after a start the first pass compares every
range with the warehouse once.

**Change or reset?** When the cursor's own row vanished or changed, a sample of
the students we hold is checked in the source. The table was *reset* (ids
restarted, all rows new) when its AUTOINCREMENT counter is below our cursor, or
when more than half of the sampled students are present with another
``created_at``. Anything less (one row edited or deleted, even the cursor's
last row, or many rows deleted) is a change.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from cohortflow.errors import SourceReset
from cohortflow.records import StudentRecord
from cohortflow.sources.students import (
    SELECT_ROWS,
    StudentsCursor,
    StudentsTable,
    canonical,
    validate_rows,
)
from cohortflow.warehouse import Warehouse, schema

log = logging.getLogger(__name__)

RANGE_IDS = 1024
#: The share of the pipeline's time that checking for edits may take.
CPU_SHARE = 0.05
SAMPLES = 16
_DIGEST = """SELECT group_concat(r, char(10)) FROM (
    SELECT quote(id) || '|' || quote(name) || '|' || quote(batch_id) || '|' || quote(created_at) AS r
    FROM students WHERE id > ? AND id <= ? ORDER BY id)"""
_ROWS = f"{SELECT_ROWS} WHERE id > ? AND id <= ? ORDER BY id"
_SEQUENCE = """SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'students'),
    (SELECT max(id) FROM students), 0)"""
_MAX_ID = "SELECT coalesce(max(id), 0) FROM students"  # a table without AUTOINCREMENT

Synced = dict[int, tuple[int, bytes]]
"""Range number -> (the id it was checked up to, its digest then)."""


@dataclass
class StudentChanges:
    """What changed in some ranges, and the digests to remember once it is committed."""

    upserts: list[StudentRecord] = field(default_factory=list)
    deletes: list[int] = field(default_factory=list)
    rejects: list[tuple[str, str, str]] = field(default_factory=list)
    synced: Synced = field(default_factory=dict)
    ends_pass: bool = False

    def __bool__(self) -> bool:
        return bool(self.upserts or self.deletes or self.rejects)


class StudentChangeDetector:
    """Finds students edited or deleted upstream, a few ranges at a time."""

    def __init__(
        self,
        table: StudentsTable,
        warehouse: Warehouse,
        *,
        pass_seconds: float = 4.0,
        paced: bool = True,
        step_seconds: float = 0.25,
    ) -> None:
        self.table = table
        self.warehouse = warehouse
        self.pass_seconds = pass_seconds
        self.paced = paced
        self.step_seconds = step_seconds
        self.passes = 0
        """Full passes completed (and committed) since this detector was made."""
        self._digests: Synced = {}
        self._next_range = 0
        self._next_at = 0.0
        self._pass_fingerprint: tuple[object, ...] | None = None
        self._clean_fingerprint: tuple[object, ...] | None = None
        self._pass_clean = True
        table.on_cursor_row_changed = self.confirm_reset

    def poll(self, cursor: StudentsCursor) -> StudentChanges | None:
        """Check the next ranges if due; the changes to stage, or None when there are none."""
        now = time.monotonic()
        if self.paced and now < self._next_at:
            return None
        self._forget_if_rebuilt(cursor)
        last_range = (cursor.last_id - 1) // RANGE_IDS
        if self._next_range == 0 and not self._begin_pass(last_range):
            return None
        ranges = range(self._next_range, min(last_range + 1, self._next_range + self._per_step(last_range)))
        changes = self._check(ranges, cursor.last_id)
        changes.ends_pass = ranges.stop > last_range
        self._next_range = 0 if changes.ends_pass else ranges.stop
        took = time.monotonic() - now
        self._next_at = now + max(self.step_seconds, took / CPU_SHARE)
        if changes:
            return changes
        self.committed(changes)  # nothing to write: remember the digests now
        return None

    def committed(self, changes: StudentChanges) -> None:
        """The changes (and so the digests) are durable in the warehouse."""
        self._digests.update(changes.synced)
        self._pass_clean = self._pass_clean and not changes
        if changes.ends_pass:
            self.passes += 1
            if self._pass_clean:
                self._clean_fingerprint = self._pass_fingerprint

    def _begin_pass(self, last_range: int) -> bool:
        """Start a pass, or skip it (counted as done) when nothing could have changed."""
        fingerprint = self.table.fingerprint()
        if last_range < 0 or (fingerprint is not None and fingerprint == self._clean_fingerprint):
            self.passes += 1
            self._next_at = time.monotonic() + self.step_seconds  # looking costs a stat: look again soon
            return False
        self._pass_fingerprint, self._pass_clean = fingerprint, True
        return True

    def _per_step(self, last_range: int) -> int:
        if not self.paced:
            return 64
        return max(1, math.ceil((last_range + 1) * self.step_seconds / self.pass_seconds))

    def _forget_if_rebuilt(self, cursor: StudentsCursor) -> None:
        """A cursor behind what we checked means the warehouse was rebuilt: start over."""
        if any(upto > cursor.last_id for upto, _ in self._digests.values()):
            self._digests.clear()
            self._next_range, self._clean_fingerprint = 0, None

    def _check(self, ranges: range, last_id: int) -> StudentChanges:
        changes = StudentChanges()
        with self.table.session() as conn:
            if conn is None:
                return changes
            for number in ranges:
                lo, upto = number * RANGE_IDS, min((number + 1) * RANGE_IDS, last_id)
                if self._digests.get(number) == (upto, _digest(conn, lo, upto)):
                    continue
                digest, rows = _read_range(conn, lo, upto)
                self._diff(lo, upto, rows, changes)
                changes.synced[number] = (upto, digest)
        return changes

    def _diff(self, lo: int, upto: int, rows: list[tuple[Any, ...]], changes: StudentChanges) -> None:
        """Stage what differs between the source's rows and the warehouse's in ``(lo, upto]``."""
        held = {
            int(r[0]): tuple(r[1:])
            for r in self.warehouse.execute(schema.SELECT_STUDENTS_BETWEEN, (lo, upto))
        }
        valid, rejects = validate_rows(self.table.name, rows)
        for record in valid:
            if held.pop(record.id, None) != (record.name, record.batch_id, record.created_at):
                changes.upserts.append(record)
        valid_ids = {record.id for record in valid}
        bad_ids = [int(row[0]) for row in rows if int(row[0]) not in valid_ids]  # in the order of `rejects`
        # Quarantined once: when a row we hold goes bad (it is then deleted), not at every pass.
        changes.rejects += [r for i, r in zip(bad_ids, rejects, strict=True) if i in held]
        changes.deletes += sorted(held)

    def confirm_reset(self, conn: sqlite3.Connection, cursor: StudentsCursor, what: str) -> None:
        """The cursor's row vanished or changed: raise SourceReset if the table started over."""
        samples = self._sample(cursor)
        found = _created_at(conn, [i for i, _ in samples])
        rewritten = sum(1 for i, created in samples if i in found and found[i] != created)
        sequence = int(conn.execute(_SEQUENCE if _has_sequence(conn) else _MAX_ID).fetchone()[0])
        if sequence < cursor.last_id:
            reason = f"{what}, and its ids restarted (the highest id given out is {sequence})"
        elif rewritten * 2 > len(samples):
            reason = f"{what}, and {rewritten} of {len(samples)} sampled students have another created_at"
        else:
            log.debug(
                "`%s`: %s; %d/%d samples rewritten: a change", self.table.name, what, rewritten, len(samples)
            )
            return
        raise SourceReset(self.table.name, f"{reason} (we had read up to id {cursor.last_id})")

    def _sample(self, cursor: StudentsCursor) -> list[tuple[int, str]]:
        """Up to ``SAMPLES`` students we hold, spread over the ids, with the cursor's own row."""
        picked = {cursor.last_id: cursor.last_created_at or ""}
        for k in range(SAMPLES - 1):
            row = self.warehouse.execute(
                schema.SELECT_STUDENT_AT_OR_AFTER, (1 + k * cursor.last_id // SAMPLES,)
            )
            if row and int(row[0][0]) <= cursor.last_id:
                picked.setdefault(int(row[0][0]), str(row[0][1]))
        return sorted(picked.items())


def _digest(conn: sqlite3.Connection, lo: int, upto: int) -> bytes:
    text = conn.execute(_DIGEST, (lo, upto)).fetchone()[0] or ""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _read_range(conn: sqlite3.Connection, lo: int, upto: int) -> tuple[bytes, list[tuple[Any, ...]]]:
    """The digest and the rows of one range, from one snapshot (a read of a few milliseconds)."""
    conn.execute("BEGIN")
    try:
        return _digest(conn, lo, upto), conn.execute(_ROWS, (lo, upto)).fetchall()
    finally:
        conn.execute("COMMIT")


def _created_at(conn: sqlite3.Connection, ids: list[int]) -> dict[int, str | None]:
    marks = ",".join("?" * len(ids))
    rows = conn.execute(f"SELECT id, created_at FROM students WHERE id IN ({marks})", ids)
    return {int(i): canonical(c) for i, c in rows}


def _has_sequence(conn: sqlite3.Connection) -> bool:
    found = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
    return bool(found[0])

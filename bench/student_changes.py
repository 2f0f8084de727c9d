"""The students change detector at scale: CPU per minute and detection delay (issue 9).

Usage: ``python bench/student_changes.py [--students 200000] [--seconds 60]``

A students table of N rows (the simulator's history) is loaded into a fresh
SQLite warehouse; then one process polls the detector the way the engine does
(every 50 ms, paced: a full pass every 4 s) while editing one random student
every 2 s (rename, move or delete, as ``--edit-rate`` does) and applying what
the detector finds. Reported: CPU seconds per minute of the whole loop (the
edits cost ~1 ms each), the same with no edits (an unchanged file skips its
passes), one unpaced full pass (the first pass after a start, or ``--once``),
and the delay from each edit's commit to the commit of its warehouse change.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cohortflow.sources.student_changes import StudentChangeDetector
from cohortflow.sources.students import StudentsCursor, StudentsTable
from cohortflow.warehouse import Warehouse, open_warehouse

POLL_S = 0.05


def build(data: Path, students: int) -> tuple[StudentsTable, Warehouse, StudentsCursor]:
    """Generate the table and load it into a fresh warehouse, as a backfill would."""
    history = ("--history-batches", str(max(1, students // 20)), "--history-students", str(students))
    cmd = [
        sys.executable,
        "-m",
        "cohortflow",
        "generate",
        "--data-dir",
        str(data),
        "--no-stream",
        "--seed",
        "7",
    ]
    subprocess.run([*cmd, *history, "--history-test-runs", "1"], check=True, capture_output=True)
    table = StudentsTable(data / "students.db", page_size=students + 1)
    page = table.read(StudentsCursor())
    assert page is not None
    warehouse = open_warehouse(str(data / "warehouse.db"), writer=True)
    warehouse.ensure_schema()
    with warehouse.transaction() as tx:
        tx.add_students(page.students)
    return table, warehouse, page.cursor


def apply(detector: StudentChangeDetector, cursor: StudentsCursor) -> set[int]:
    """One engine-like poll; the ids whose change was committed."""
    changes = detector.poll(cursor)
    if changes is None:
        return set()
    with detector.warehouse.transaction() as tx:
        tx.update_students(changes.upserts)
        tx.delete_students(changes.deletes)
    detector.committed(changes)
    return {s.id for s in changes.upserts} | set(changes.deletes)


def edit(db: Path, rng: random.Random, last_id: int, batches: int) -> int:
    """One rename, move or delete of a random student, committed; its id."""
    student = rng.randint(1, last_id)
    statement = rng.choice(
        [
            ("UPDATE students SET name = ? WHERE id = ?", (f"Edited {rng.random():.6f}", student)),
            ("UPDATE students SET batch_id = ? WHERE id = ?", (rng.randint(1, batches), student)),
            ("DELETE FROM students WHERE id = ?", (student,)),
        ]
    )
    with sqlite3.connect(db) as conn:
        conn.execute(*statement)
    conn.close()
    return student


def follow(
    detector: StudentChangeDetector, cursor: StudentsCursor, seconds: float, edit_every: float | None
) -> tuple[float, list[float]]:
    """Poll for ``seconds``; CPU seconds used and the delays of the edits made meanwhile."""
    rng, pending, delays = random.Random(7), dict[int, float](), []
    batches = max(1, cursor.last_id // 20)
    cpu, end, next_edit = time.process_time(), time.monotonic() + seconds, time.monotonic()
    while time.monotonic() < end:
        if edit_every is not None and time.monotonic() >= next_edit:
            pending[edit(detector.table.path, rng, cursor.last_id, batches)] = time.monotonic()
            next_edit += edit_every
        for student in apply(detector, cursor) & pending.keys():
            delays.append(time.monotonic() - pending.pop(student))
        time.sleep(POLL_S)
    return time.process_time() - cpu, delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        table, warehouse, cursor = build(Path(tmp) / "data", args.students)
        unpaced = StudentChangeDetector(table, warehouse, paced=False)
        began = time.process_time()
        while unpaced.passes == 0:
            apply(unpaced, cursor)
        first_pass = time.process_time() - began
        detector = StudentChangeDetector(table, warehouse)
        while detector.passes < 2:  # its own first pass fills the digests; the second is clean
            apply(detector, cursor)
            time.sleep(POLL_S)
        idle_cpu, _ = follow(detector, cursor, args.seconds / 2, None)
        busy_cpu, delays = follow(detector, cursor, args.seconds, 2.0)
        warehouse.close()
    per_minute = 60 / args.seconds
    print(f"students={args.students} (measured on a shared, loaded machine)")
    print(f"first full pass, unpaced (start or --once): {first_pass:.2f} s CPU")
    print(f"following, an edit every 2 s: {busy_cpu * per_minute:.2f} CPU s/min")
    print(f"following, no edits: {idle_cpu * per_minute * 2:.2f} CPU s/min")
    if delays:
        print(
            f"detection delay over {len(delays)} edits: median {statistics.median(delays):.2f} s, "
            f"max {max(delays):.2f} s (target 10 s)"
        )


if __name__ == "__main__":
    main()

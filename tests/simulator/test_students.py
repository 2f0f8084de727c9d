"""students.db: exact schema, names round-trip, and a slow reader never costs a student."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from cohortflow.contract import STUDENTS_TABLE_DDL
from cohortflow.simulator.process import SimulatorProcess
from cohortflow.simulator.runner import GenerateOptions, stream_script
from cohortflow.simulator.stream import StreamState
from cohortflow.simulator.students import StudentsWriter
from tests.simulator.conftest import rows, stopped_counts, students, wait_for, write_history

TRICKY = [
    "Miles O'Brien",
    "D'Arcy d'Artagnan",
    "Zoë Ó Corra",
    "Bartholomäus Müller",
    "李伟",
    "Άγγελος Παπαδόπουλος",
    "Robert'); DROP TABLE students;--",
    'Say "hi"',
]


def test_schema_is_the_contract_one(tmp_path: Path) -> None:
    write_history(tmp_path, seed=1, history_batches=1, history_students=2)
    (sql,) = rows(tmp_path / "students.db", "SELECT sql FROM sqlite_master WHERE name='students'")[0]
    assert " ".join(sql.split()) == STUDENTS_TABLE_DDL.replace(" IF NOT EXISTS", "")
    (mode,) = rows(tmp_path / "students.db", "PRAGMA journal_mode")[0]
    assert mode == "delete"  # the upstream's default rollback journal, not WAL


def test_tricky_names_round_trip(tmp_path: Path) -> None:
    writer = StudentsWriter(tmp_path / "students.db")
    try:
        ids = [writer.add(name, 1, f"2026-01-01 00:00:0{i}.000000") for i, name in enumerate(TRICKY)]
    finally:
        writer.close()
    assert ids == list(range(1, len(TRICKY) + 1))
    assert [s[1] for s in students(tmp_path)] == TRICKY


def test_generated_names_include_apostrophes_and_non_ascii(tmp_path: Path) -> None:
    write_history(tmp_path, seed=2, history_batches=5, history_students=3000)
    names = [s[1] for s in students(tmp_path)]
    assert len(set(names)) > 2500
    assert sum("'" in name for name in names) >= 3
    assert sum(not name.isascii() for name in names) >= 300
    assert all(name.strip() == name and name for name in names)


def _hold_read_locks(db: Path, rounds: int, hold_s: float) -> None:
    reader = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        for _ in range(rounds):
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM students").fetchall()  # SHARED lock held
            time.sleep(hold_s)
            reader.execute("COMMIT")
            time.sleep(0.05)
    finally:
        reader.close()


def test_a_reader_holding_the_database_never_costs_a_student(
    simulator: Callable[..., SimulatorProcess],
) -> None:
    # the writer's busy timeout (50 ms) is far shorter than the reader's hold (400 ms)
    sim = simulator("--seed", "6", "--interval-ms", "10", "--busy-timeout-ms", "50")
    db = sim.data_dir / "students.db"
    wait_for(lambda: db.exists() and len(students(sim.data_dir)) >= 4)
    _hold_read_locks(db, rounds=4, hold_s=0.4)
    assert sim.stop() == 0, sim.stderr
    counts = stopped_counts(sim.stderr)
    assert counts["student_lock_retries"] > 0  # the reader really blocked the writer
    written = students(sim.data_dir)
    assert len(written) == counts["students"] == 4 * -(-counts["intervals"] // 5)
    script = stream_script(GenerateOptions(seed=6, interval_ms=10), 6)
    state = StreamState()
    expected = [p for n in range(counts["intervals"]) for p in script.tick(n, state).students]
    assert [(s[1], s[2]) for s in written] == expected  # none lost, none duplicated


def test_edit_rate_renames_moves_and_deletes_existing_students(
    simulator: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator("--seed", "8", "--interval-ms", "10", "--edit-rate", "100", "--duration", "2")
    assert sim.wait(timeout_s=60) == 0, sim.stderr
    edits = int(re.search(r" edits=(\d+)", sim.stderr).group(1))  # type: ignore[union-attr]
    counts = stopped_counts(sim.stderr)
    assert edits >= 50
    written = students(sim.data_dir)
    script = stream_script(GenerateOptions(seed=8, interval_ms=10), 8)
    state = StreamState()
    as_streamed = [p for n in range(counts["intervals"]) for p in script.tick(n, state).students]
    assert 0 < len(written) < counts["students"], "some students were deleted"
    by_id = {s[0]: (s[1], s[2]) for s in written}
    changed = [i for i, row in enumerate(as_streamed, 1) if i in by_id and by_id[i] != row]
    assert changed, "some students were renamed or moved"
    assert max(by_id) <= counts["students"] and len(set(by_id)) == len(by_id)

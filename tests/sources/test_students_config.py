"""A students.db path that can never work fails at once with one line; a missing file is waited for."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cohortflow.contract import STUDENTS_TABLE_DDL
from cohortflow.warehouse import open_warehouse
from tests.support.pipeline import pipeline_cmd


def _not_sqlite(path: Path) -> None:
    path.write_text("id,name\n1,Ada\n")


def _other_tables(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE pupils (id INTEGER PRIMARY KEY)")
    conn.close()


BAD_PATHS: dict[str, tuple[Callable[[Path], None] | None, str, str]] = {
    "no-directory": (None, "nowhere/students.db", "does not exist"),
    "a-directory": (lambda p: p.mkdir(), "students.db", "is a directory"),
    "not-sqlite": (_not_sqlite, "students.db", "is not a SQLite database"),
    "no-students-table": (_other_tables, "students.db", "has no `students` table"),
    "missing-file": (None, "students.db", "does not exist"),
}


@pytest.mark.parametrize("case", BAD_PATHS)
def test_a_bad_students_db_fails_once_at_once_with_one_line(tmp_path: Path, case: str) -> None:
    make, name, says = BAD_PATHS[case]
    db = tmp_path / name
    if make is not None:
        make(db)
    (tmp_path / "test_runs.log").write_bytes(b"")
    command = pipeline_cmd(tmp_path, "http://127.0.0.1:9", str(tmp_path / "warehouse.db"), "--once")
    command[command.index("--students-db") + 1] = str(db)
    started = time.monotonic()
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 20, "a configuration error is not retried"
    lines = [line for line in done.stderr.splitlines() if line.startswith("cohortflow:")]
    assert len(lines) == 1 and lines[0].startswith("cohortflow: --students-db"), done.stderr
    assert "Traceback" not in done.stderr
    assert says in lines[0] and str(db) in lines[0]


def test_follow_mode_waits_for_a_missing_students_db(tmp_path: Path) -> None:
    db, warehouse = tmp_path / "students.db", str(tmp_path / "warehouse.db")
    (tmp_path / "test_runs.log").write_bytes(b"")
    follower = subprocess.Popen(
        pipeline_cmd(tmp_path, "http://127.0.0.1:9", warehouse), stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(2)
        assert follower.poll() is None, "a missing file in an existing directory is waited for"
        with sqlite3.connect(db) as conn:
            conn.execute(STUDENTS_TABLE_DDL)
            conn.execute(
                "INSERT INTO students (name, batch_id, created_at) VALUES ('Ada', 1, ?)",
                ("2026-01-01 00:00:00.000001",),
            )
        conn.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open_warehouse(warehouse) as wh:
                if (
                    wh.execute("SELECT count(*) FROM sqlite_master WHERE name = 'students'")[0][0]
                    and wh.execute("SELECT count(*) FROM students")[0][0] == 1
                ):
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the student was never ingested")
    finally:
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err

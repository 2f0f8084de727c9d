"""Test helpers shared across suites: warehouse snapshots and comparisons with the naive model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from cohortflow.warehouse import Warehouse
from tests.naive import NaiveModel


def snapshot(warehouse: Warehouse) -> dict[str, Any]:
    """The analyst-visible content of the warehouse, in a backend-independent form."""
    q = warehouse.execute
    return {
        "batches": {
            int(r[0]): (r[1], int(r[2]), int(r[3]))
            for r in q("SELECT id, name, students_total, students_completed_3plus FROM batches")
        },
        "students": {
            int(r[0]): (r[1], int(r[2]), int(r[3]))
            for r in q("SELECT id, name, batch_id, lessons_completed FROM students")
        },
        "lessons": {int(r[0]): r[1] for r in q("SELECT id, title FROM lessons")},
        "quarantine": {
            (s, r): int(n) for s, r, n in q("SELECT source, reason, count(*) FROM quarantine GROUP BY 1, 2")
        },
    }


def expected(model: NaiveModel) -> dict[str, Any]:
    """The naive model in the same form as :func:`snapshot` (quarantine: test_runs only)."""
    return {
        "batches": model.batch_rows(),
        "students": model.student_rows(),
        "lessons": dict(model.lessons),
        "quarantine": {("test_runs", reason): n for reason, n in model.rejects.items()},
    }


def generate(data: Path, *args: str) -> None:
    """Write a history with the project's generator and exit (no stream, no server)."""
    command = [sys.executable, "-m", "cohortflow", "generate", "--data-dir", str(data), "--no-stream", *args]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def tiny_sources(data: Path) -> tuple[str, ...]:
    """Real, good sources (generated once per directory) as ``run`` options, for tests of other faults."""
    if not (data / "students.db").exists():
        generate(data, "--history-batches", "1", "--history-students", "2", "--history-test-runs", "5")
    return ("--students-db", str(data / "students.db"), "--test-runs-log", str(data / "test_runs.log"))

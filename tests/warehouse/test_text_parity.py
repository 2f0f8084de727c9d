"""One text rule on both warehouses: hostile names store the same on SQLite and a real PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cohortflow.parse import parse_runs, split_lines, summarise_runs
from cohortflow.records import BatchRecord, StudentRecord
from cohortflow.warehouse import Warehouse, open_warehouse
from cohortflow.warehouse.text import REPLACED_KEY, REPLACEMENT
from tests.helpers import snapshot

HOSTILE = [
    'O\'Brien "the" `tick`',
    "'); DROP TABLE students; --",
    "Robert\\'; SELECT 1; %s ? $1",
    "🎓 Zoë 👩‍💻",
    "\u202eevil\u202c \u200f\u0631\u0627\u0626\u062f\u200f",
    "[/] unbalanced [/bold] =1+1",
    "nul\x00inside",
    "\x00",
    "x" * 10_240,
]
UNHOLDABLE = ["lone \ud800 surrogate"]  # a JSON "\ud800" escape in a batch name yields this


def _fill(wh: Warehouse) -> None:
    names = [*HOSTILE, *UNHOLDABLE]
    with wh.transaction() as tx:
        tx.add_batches(
            [BatchRecord(i, name, f"2026-01-01 00:00:{i:02d}.000000") for i, name in enumerate(names, 1)]
        )
        tx.add_students(
            [StudentRecord(i, name, i, "2026-01-01 00:01:00.000000") for i, name in enumerate(names, 1)]
        )
        lines = [
            json.dumps({"student_id": i, "lesson_id": i, "lesson_title": title, "result": "1/1"}).encode()
            for i, title in enumerate(HOSTILE, 1)
        ]
        lines.append(
            b'{"student_id": 1, "lesson_id": 99, "result": "1/1", "raw": "nul\x00byte"}'
        )  # invalid JSON
        chunk = b"".join(line + b"\n" for line in lines)
        tx.add_runs(summarise_runs(parse_runs(split_lines(chunk, 0, "t.log"))))
        tx.add_rejects("students", [("students.db:rowid 9", "bad\x00row", "bad_batch_id")])


def _stored(target: str) -> dict[str, Any]:
    with open_warehouse(target, writer=True) as wh:
        wh.ensure_schema()
        _fill(wh)
        got = snapshot(wh)
        got["raw"] = sorted(r[0] for r in wh.execute("SELECT raw FROM quarantine"))
        got["replaced"] = wh.state()[REPLACED_KEY]
    return got


def test_hostile_names_are_stored_the_same_on_sqlite_and_postgres(
    tmp_path: Path, pg_database: Callable[[], str]
) -> None:
    on_sqlite, on_postgres = _stored(str(tmp_path / "wh.db")), _stored(pg_database())
    assert on_sqlite == on_postgres
    names = [on_sqlite["batches"][i][0] for i in sorted(on_sqlite["batches"])]
    assert names == [n.replace("\x00", REPLACEMENT) for n in HOSTILE] + ["lone \ufffd surrogate"]
    assert [on_sqlite["students"][i][0] for i in sorted(on_sqlite["students"])] == names
    # Titles with a NUL are the parse's to reject (bad_lesson_title); whatever it keeps stores as-is.
    assert all("\x00" not in title for title in on_sqlite["lessons"].values())
    assert all("\x00" not in raw for raw in on_sqlite["raw"])
    assert any(REPLACEMENT in raw for raw in on_sqlite["raw"])  # the students reject's raw NUL
    # 2 batch and 2 student names with a NUL, 1 of each with a surrogate, at least the students raw.
    assert on_sqlite["replaced"] >= 2 * 2 + 2 + 1

"""Boundary behaviour of the three incremental readers, on real files, SQLite and HTTP."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from cohortflow.contract import STUDENTS_TABLE_DDL
from cohortflow.errors import SourceError, SourceReset
from cohortflow.parse import LINE_LIMIT, RAW_SCHEMA, parse_runs
from cohortflow.simulator.process import SimulatorProcess
from cohortflow.sources import BatchApi, BatchesCursor, LogCursor, RunLog, StudentsCursor, StudentsTable
from tests.helpers import generate
from tests.naive import all_batches

RUN = b'{"result": "1/1", "student_id", 1, "lesson_id": 2}\n'


def _drain(log: RunLog, cursor: LogCursor, max_bytes: int = 1 << 20) -> tuple[list[bytes], LogCursor]:
    lines: list[bytes] = []
    while (chunk := log.read(cursor, max_bytes)) is not None:
        lines += chunk.lines.column("line").to_pylist()
        cursor = chunk.cursor
    return lines, cursor


def test_half_written_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "test_runs.log"
    path.write_bytes(RUN + RUN[:20])
    log = RunLog(path)
    lines, cursor = _drain(log, LogCursor())
    assert lines == [RUN]
    assert cursor.offset == len(RUN)
    with path.open("ab") as f:
        f.write(RUN[20:])
    lines, cursor = _drain(log, cursor)
    assert lines == [RUN]
    assert cursor.offset == 2 * len(RUN)


def test_chunks_cut_at_newlines_whatever_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "test_runs.log"
    path.write_bytes(RUN * 50)
    for budget in (len(RUN) - 1, len(RUN), len(RUN) + 1, 7 * len(RUN) + 3):
        lines, cursor = _drain(RunLog(path), LogCursor(), budget)
        assert lines == [RUN] * 50, budget
        assert cursor.offset == 50 * len(RUN)


@pytest.mark.parametrize("max_bytes", [512, 4 << 20, 64 << 20])
def test_a_line_too_long_to_hold_is_read_as_a_bounded_stand_in(tmp_path: Path, max_bytes: int) -> None:
    """Lines over the limit reach the parse (which quarantines them) cut short, whatever the chunk."""
    path = tmp_path / "test_runs.log"
    long_line = b"x" * (LINE_LIMIT + 1) + b"\n"
    huge_line = b"y" * (3 * LINE_LIMIT) + b"\n"
    path.write_bytes(RUN + long_line + huge_line + RUN)
    log, cursor, seen = RunLog(path), LogCursor(), []
    while (chunk := log.read(cursor, max_bytes)) is not None:
        seen += chunk.lines.to_pylist()
        cursor = chunk.cursor
    assert [row["offset"] for row in seen] == [
        0,
        len(RUN),
        len(RUN) + len(long_line),
        path.stat().st_size - len(RUN),
    ]
    assert max(len(row["line"]) for row in seen) <= 3 * LINE_LIMIT + 1  # a chunk may hold it whole
    reasons = parse_runs(pa.RecordBatch.from_pylist(seen, schema=RAW_SCHEMA)).column("reason").to_pylist()
    assert reasons == [None, "line_too_long", "line_too_long", None]
    assert cursor.offset == path.stat().st_size
    if max_bytes < LINE_LIMIT:
        assert max(len(row["line"]) for row in seen) == LINE_LIMIT + 2  # the stand-in and its newline


@pytest.mark.parametrize("how", ["truncated", "replaced", "rewritten"])
def test_log_reset_is_detected(tmp_path: Path, how: str) -> None:
    path = tmp_path / "test_runs.log"
    path.write_bytes(RUN * 10)
    log = RunLog(path)
    _, cursor = _drain(log, LogCursor())
    if how == "truncated":
        os.truncate(path, len(RUN))
    elif how == "replaced":
        path.unlink()  # the new file may well get the same inode back
        path.write_bytes(RUN.replace(b"1, ", b"2, ") * 20)
    else:
        with path.open("r+b") as f:
            f.write(RUN.replace(b"1/1", b"0/1"))
    with pytest.raises(SourceReset, match="--on-reset restart"):
        log.read(cursor, 1 << 20)


def _students_db(path: Path, names: list[str]) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(STUDENTS_TABLE_DDL)
        for name in names:
            conn.execute(
                "INSERT INTO students (name, batch_id, created_at) VALUES (?, 1, ?)",
                (name, "2026-01-01 00:00:00.000001"),
            )
    conn.close()


def test_students_are_read_in_pages_with_unicode_intact(tmp_path: Path) -> None:
    names = ["Miles O'Brien", "Zoë Ünal", "李小龍", 'Robert "Bobby" Tables', "Ærøskøbing 🎓"]
    path = tmp_path / "students.db"
    _students_db(path, names)
    table = StudentsTable(path, page_size=2)
    cursor, got = StudentsCursor(), []
    while (page := table.read(cursor)) is not None:
        got += [s.name for s in page.students]
        cursor = page.cursor
    assert got == names
    assert cursor.last_id == 5


def test_an_idle_students_table_is_read_again_from_a_rewound_cursor(tmp_path: Path) -> None:
    path = tmp_path / "students.db"
    _students_db(path, ["Ada", "Grace"])
    table = StudentsTable(path, recheck_seconds=3600)  # the idle shortcut holds all test long
    page = table.read(StudentsCursor())
    assert page is not None and table.read(page.cursor) is None  # idle now, file unchanged
    again = table.read(StudentsCursor())  # a rebuild (--on-reset restart) starts over
    assert again is not None and [s.name for s in again.students] == ["Ada", "Grace"]


def test_students_reset_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "students.db"
    _students_db(path, ["a", "b", "c"])
    page = StudentsTable(path).read(StudentsCursor())
    assert page is not None
    path.unlink()
    _students_db(path, ["x"])
    with pytest.raises(SourceReset, match="student 3 vanished"):
        StudentsTable(path).read(page.cursor)


@pytest.fixture(scope="module")
def api_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frozen history with more than two pages of batches."""
    data = tmp_path_factory.mktemp("api") / "data"
    history = ("--history-batches", "250", "--history-students", "10", "--history-test-runs", "10")
    generate(data, "--seed", "9", *history)
    return data


@pytest.mark.parametrize("mode", [(), ("--exact-after",)], ids=["whole-second-after", "exact-after"])
def test_batches_are_paged_without_loss_or_repeats(api_data: Path, mode: tuple[str, ...]) -> None:
    with SimulatorProcess(api_data, "--no-stream", "--serve", *mode) as sim:
        url = f"{sim.url}/batches"
        with BatchApi(url) as api:
            read = api.read(BatchesCursor())
            again = api.read(read.cursor)
            middle = BatchesCursor(read.batches[99].created_at, (100,))
            after_middle = api.read(middle)
        assert [b.id for b in read.batches] == list(range(1, 251))
        assert read.rejects == []
        assert again.batches == [] and again.cursor == read.cursor
        assert [b.id for b in after_middle.batches] == list(range(101, 251))
        assert len(all_batches(url)) == 250


def test_whole_second_after_really_overlaps(api_data: Path) -> None:
    """The upstream quirk our cursor exists for: a page repeats records we already have."""
    with SimulatorProcess(api_data, "--no-stream", "--serve") as sim:
        first = httpx.get(f"{sim.url}/batches", timeout=10).json()
        after = first[50]["created_at"].replace(" ", "T")[:23]
        page = httpx.get(f"{sim.url}/batches", params={"after": after}, timeout=10).json()
        assert page[0]["id"] <= first[50]["id"], "whole-second truncation serves records at or before `after`"


def test_vanished_batches_are_not_a_reset_on_one_read(api_data: Path, tmp_path: Path) -> None:
    """A reset is confirmed by full listings (warehouse.reconcile), never inferred from one page."""
    other = tmp_path / "other"
    history = ("--history-batches", "3", "--history-students", "1", "--history-test-runs", "1")
    with SimulatorProcess(other, "--seed", "1", "--no-stream", "--serve", *history) as fresh:
        cursor = BatchesCursor("2031-01-01 00:00:00.000000", (999,))
        with BatchApi(f"{fresh.url}/batches") as api:
            read = api.read(cursor)
            listing = api.listing()
        assert read.batches == [] and read.cursor == cursor
        assert [b.id for b in listing.records] == [1, 2, 3]
        assert listing.reach == listing.records[-1].created_at


def test_api_errors_are_clear(api_data: Path) -> None:
    with (
        SimulatorProcess(api_data, "--no-stream", "--serve") as sim,
        BatchApi(f"{sim.url}/nothing-here") as api,
        pytest.raises(SourceError, match="404"),
    ):
        api.read(BatchesCursor())

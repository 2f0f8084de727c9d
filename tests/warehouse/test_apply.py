"""The warehouse apply: incremental ticks equal one big tick and the naive recompute, on both backends."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortflow.errors import WarehouseLocked
from cohortflow.parse import parse_runs, split_lines, summarise_runs
from cohortflow.records import BatchRecord, StudentRecord
from cohortflow.warehouse import Warehouse, open_warehouse
from tests.helpers import expected, snapshot
from tests.naive import NaiveModel

TITLES = ["Fetch Lab", "Use Fetch", "O'Brien's \"lab\"", "Zoë"]


@pytest.fixture(params=["sqlite", "postgres"])
def make_target(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """A factory of empty warehouse targets on each backend."""
    if request.param == "sqlite":
        counter = iter(range(1000))
        return lambda: str(tmp_path / f"wh{next(counter)}.db")
    factory: Callable[[], str] = request.getfixturevalue("pg_database")
    return factory


@pytest.fixture
def warehouse(make_target: Callable[[], str]) -> Iterator[Warehouse]:
    with open_warehouse(make_target(), writer=True) as wh:
        wh.ensure_schema()
        yield wh


def _line(student: int, lesson: int | None, title: str | None, passed: int, total: int, form: int) -> bytes:
    doc: dict[str, object] = {"result": f"{passed}/{total}" if form % 2 else f"{passed} out of {total}"}
    doc["student_id"] = student if form < 2 else str(student)
    if lesson is not None:
        doc["lesson_id"] = lesson if form % 3 else str(lesson)
    if title is not None:
        doc["lesson_title"] = title
    return json.dumps(doc, ensure_ascii=False).replace('"student_id": ', '"student_id", ').encode()


GARBAGE = [b"", b'{"result": "1/1"', b'{"result": "5/2", "student_id": 1, "lesson_id": 1}']


@st.composite
def log_lines(draw: st.DrawFn) -> bytes:
    """Mostly valid runs (often completed), in every upstream form; about a tenth garbage."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(GARBAGE))
    total = draw(st.integers(1, 2))
    named = draw(st.sampled_from(["id", "title", "both"]))
    lesson = draw(st.integers(1, 5)) if named != "title" else None
    title = draw(st.sampled_from(TITLES)) if named != "id" else None
    passed = draw(st.sampled_from([total, total, 0]))
    return _line(draw(st.integers(1, 5)), lesson, title, passed, total, draw(st.integers(0, 3)))


@st.composite
def histories(draw: st.DrawFn) -> dict[str, list]:
    batches = [
        BatchRecord(i, f"web-{i}", f"2026-01-01 00:00:{i:02d}.000000")
        for i in range(1, draw(st.integers(0, 4)) + 1)
    ]
    students = [
        StudentRecord(
            i,
            draw(st.sampled_from(["Ann", "O'Brien", "Zoë Ünal"])),
            draw(st.integers(1, 5)),
            f"2026-01-01 00:01:{i:02d}.000000",
        )
        for i in range(1, draw(st.integers(0, 6)) + 1)
    ]
    return {
        "batches": batches,
        "students": students,
        "lines": draw(st.lists(log_lines(), min_size=5, max_size=80)),
    }


def _cuts(data: st.DataObject, size: int, ticks: int) -> list[int]:
    """Where each of ``ticks`` ticks starts and ends in a source of ``size`` items."""
    points = data.draw(st.lists(st.integers(0, size), min_size=ticks - 1, max_size=ticks - 1))
    return [0, *sorted(points), size]


def _apply(warehouse: Warehouse, history: dict[str, list], cuts: dict[str, list[int]]) -> None:
    ticks = len(cuts["lines"]) - 1
    for t in range(ticks):
        with warehouse.transaction() as tx:
            b0, b1 = cuts["batches"][t : t + 2]
            s0, s1 = cuts["students"][t : t + 2]
            l0, l1 = cuts["lines"][t : t + 2]
            tx.add_batches(history["batches"][b0:b1])
            tx.add_students(history["students"][s0:s1])
            chunk = b"".join(line + b"\n" for line in history["lines"][l0:l1])
            tx.add_runs(summarise_runs(parse_runs(split_lines(chunk, l0 * 1000, "t.log"))))


def _naive(history: dict[str, list]) -> NaiveModel:
    model = NaiveModel()
    model.batches = {b.id: {"name": b.name} for b in history["batches"]}
    model.students = {s.id: {"name": s.name, "batch_id": s.batch_id} for s in history["students"]}
    model.add_lines(history["lines"])
    model.finish()
    return model


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories(), data=st.data())
def test_any_split_into_ticks_equals_one_tick_and_the_naive_recompute(
    warehouse: Warehouse, history: dict[str, list], data: st.DataObject
) -> None:
    ticks = data.draw(st.integers(1, 6))
    cuts = {key: _cuts(data, len(values), ticks) for key, values in history.items()}
    warehouse.wipe()
    _apply(warehouse, history, cuts)
    split = snapshot(warehouse)
    warehouse.wipe()
    _apply(warehouse, history, {key: [0, len(values)] for key, values in history.items()})
    assert split == snapshot(warehouse)
    assert split == expected(_naive(history))


def test_title_only_run_counts_once_its_id_is_learned(warehouse: Warehouse) -> None:
    def tick(*lines: bytes) -> None:
        with warehouse.transaction() as tx:
            tx.add_runs(summarise_runs(parse_runs(split_lines(b"".join(x + b"\n" for x in lines), 0, "t"))))

    with warehouse.transaction() as tx:
        tx.add_batches([BatchRecord(1, "web-1", "2026-01-01 00:00:00.000000")])
        tx.add_students([StudentRecord(7, "O'Brien", 1, "2026-01-01 00:00:01.000000")])
    tick(_line(7, None, "Fetch Lab", 1, 1, 0), _line(7, 1, None, 2, 2, 1), _line(7, 2, None, 2, 2, 1))
    assert snapshot(warehouse)["students"][7] == ("O'Brien", 1, 2)
    tick(_line(9, 8, "Fetch Lab", 0, 2, 0))  # the mapping arrives, in a run that did not pass
    assert snapshot(warehouse)["students"][7] == ("O'Brien", 1, 3)
    assert snapshot(warehouse)["batches"][1] == ("web-1", 1, 1)


def test_late_student_and_late_batch_are_counted_when_they_arrive(warehouse: Warehouse) -> None:
    lines = b"".join(_line(3, lesson, None, 1, 1, 0) + b"\n" for lesson in (1, 2, 3))
    with warehouse.transaction() as tx:
        tx.add_runs(summarise_runs(parse_runs(split_lines(lines, 0, "t"))))
    with warehouse.transaction() as tx:
        tx.add_students([StudentRecord(3, "Zoë", 4, "2026-01-01 00:00:01.000000")])
    assert snapshot(warehouse)["students"][3] == ("Zoë", 4, 3)
    with warehouse.transaction() as tx:
        tx.add_batches([BatchRecord(4, "ios-4", "2026-01-01 00:00:00.000000")])
    assert snapshot(warehouse)["batches"][4] == ("ios-4", 1, 1)


def test_failed_transaction_leaves_nothing_behind(warehouse: Warehouse) -> None:
    with pytest.raises(RuntimeError), warehouse.transaction() as tx:
        tx.add_batches([BatchRecord(1, "web-1", "2026-01-01 00:00:00.000000")])
        tx.set_state("cursor:test", {"offset": 10})
        raise RuntimeError
    assert snapshot(warehouse)["batches"] == {}
    assert "cursor:test" not in warehouse.state()


def test_second_writer_is_refused(make_target: Callable[[], str]) -> None:
    target = make_target()
    with open_warehouse(target, writer=True) as first, open_warehouse(target, writer=True) as second:
        first.ensure_schema()
        first.acquire_writer()
        with pytest.raises(WarehouseLocked, match="another cohortflow pipeline"):
            second.acquire_writer()
        first.close()
        second.acquire_writer()  # the lease is free once the first writer is gone


def test_leaderboard_ranks_ties_together(warehouse: Warehouse) -> None:
    with warehouse.transaction() as tx:
        tx.add_batches([BatchRecord(i, f"b{i}", f"2026-01-01 00:00:0{i}.000000") for i in (1, 2, 3)])
        tx.add_students([StudentRecord(i, f"s{i}", 1 + i % 2, "2026-01-01 00:01:00.000000") for i in (1, 2)])
        lines = b"".join(_line(s, lesson, None, 1, 1, 0) + b"\n" for s in (1, 2) for lesson in (1, 2, 3))
        tx.add_runs(summarise_runs(parse_runs(split_lines(lines, 0, "t"))))
    board = warehouse.leaderboard(10)
    assert [(r["rank"], r["batch_id"], r["students_completed_3plus"]) for r in board] == [
        (1, 1, 1),
        (1, 2, 1),
        (3, 3, 0),
    ]

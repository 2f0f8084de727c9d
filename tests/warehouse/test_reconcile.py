"""Reconciling full listings of the batch API, on both backends: additions, renames, gone, reset."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cohortflow.errors import SourceReset
from cohortflow.records import BatchRecord, StudentRecord
from cohortflow.warehouse import Warehouse, open_warehouse
from cohortflow.warehouse.reconcile import ReconcileCounts, reconcile_batches

URL = "http://api.test/batches"
_clock = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    if request.param == "sqlite":
        target = str(tmp_path / "wh.db")
    else:
        factory: Callable[[], str] = request.getfixturevalue("pg_database")
        target = factory()
    with open_warehouse(target, writer=True) as wh:
        wh.ensure_schema()
        yield wh


def batch(i: int, name: str | None = None) -> BatchRecord:
    return BatchRecord(i, name or f"web-{i}", f"2026-01-01 00:00:{i:02d}.000001")


def listing(wh: Warehouse, records: list[BatchRecord], gone_after: int = 3) -> ReconcileCounts:
    reach = max((b.created_at for b in records), default=None)
    listed_at = f"2026-06-01T00:00:00.{next(_clock):06d}+00:00"
    with wh.transaction() as tx:
        return reconcile_batches(tx, records, reach, listed_at, gone_after=gone_after, source=URL)


def hold(wh: Warehouse, records: list[BatchRecord]) -> None:
    with wh.transaction() as tx:
        tx.add_batches(records)
        tx.add_students([StudentRecord(b.id, f"s{b.id}", b.id, b.created_at) for b in records])


def board(wh: Warehouse) -> dict[int, str]:
    return {int(row["batch_id"]): str(row["name"]) for row in wh.leaderboard(100)}


def test_missing_batches_are_added_and_counted(warehouse: Warehouse) -> None:
    hold(warehouse, [batch(1), batch(3)])
    counts = listing(warehouse, [batch(1), batch(2), batch(3)])
    assert counts.added == 1 and counts.absent == 0
    assert board(warehouse) == {1: "web-1", 2: "web-2", 3: "web-3"}
    figures = {int(r[0]): int(r[1]) for r in warehouse.execute("SELECT id, students_total FROM batches")}
    assert figures == {1: 1, 2: 0, 3: 1}


def test_a_renamed_batch_is_renamed(warehouse: Warehouse) -> None:
    hold(warehouse, [batch(1), batch(2)])
    assert listing(warehouse, [batch(1), batch(2, "ios-renamed")]).renamed == 1
    assert board(warehouse) == {1: "web-1", 2: "ios-renamed"}


def test_a_batch_is_gone_only_after_n_consecutive_absences_and_comes_back(warehouse: Warehouse) -> None:
    hold(warehouse, [batch(1), batch(2), batch(3)])
    without_2 = [batch(1), batch(3)]
    listing(warehouse, without_2)
    listing(warehouse, without_2)
    listing(warehouse, [batch(1), batch(2), batch(3)])  # served again: the count starts over
    for _ in range(2):
        assert listing(warehouse, without_2).gone == 0
        assert 2 in board(warehouse)
    assert listing(warehouse, without_2).gone == 1
    assert board(warehouse) == {1: "web-1", 3: "web-3"}
    assert warehouse.execute("SELECT count(*) FROM batches")[0][0] == 3  # never deleted
    listing(warehouse, [batch(1), batch(2), batch(3)])
    assert set(board(warehouse)) == {1, 2, 3}


def test_batches_beyond_the_listings_reach_are_not_absent(warehouse: Warehouse) -> None:
    hold(warehouse, [batch(1), batch(2), batch(3)])
    for _ in range(5):  # e.g. listings that stopped early on a stale last page
        assert listing(warehouse, [batch(1)]).absent == 0
    assert set(board(warehouse)) == {1, 2, 3}


def test_a_listing_applied_twice_counts_once(warehouse: Warehouse) -> None:
    hold(warehouse, [batch(1), batch(2)])
    for _ in range(2):
        with warehouse.transaction() as tx:
            reconcile_batches(
                tx, [batch(2)], batch(2).created_at, "2026-06-02T00:00:00+00:00", gone_after=3, source=URL
            )
    assert warehouse.execute("SELECT absent_listings FROM batches WHERE id = 1")[0][0] == 1


def test_a_reset_is_confirmed_by_n_listings_reusing_our_ids(warehouse: Warehouse) -> None:
    hold(warehouse, [batch(1), batch(2)])
    others = [BatchRecord(1, "data_science-x", "2027-01-01 00:00:00.000001")]  # ids restarted
    listing(warehouse, others)
    listing(warehouse, others)
    with pytest.raises(SourceReset, match="batch 1 is served as created at 2027"):
        listing(warehouse, others)
    assert set(board(warehouse)) == {1, 2}  # the failed tick rolled back; nothing was wiped


def test_batches_replaced_under_new_ids_are_gone_and_added_not_a_reset(warehouse: Warehouse) -> None:
    hold(warehouse, [batch(1), batch(2)])
    others = [BatchRecord(50, "data_science-x", "2027-01-01 00:00:00.000001")]
    for _ in range(3):
        listing(warehouse, others)
    assert board(warehouse) == {50: "data_science-x"}


def test_one_odd_listing_between_good_ones_is_not_a_reset(warehouse: Warehouse) -> None:
    hold(warehouse, [batch(1), batch(2)])
    odd = [BatchRecord(1, "web-1", "2027-01-01 00:00:00.000001")]
    for _ in range(3):
        listing(warehouse, odd, gone_after=2)
        listing(warehouse, [batch(1), batch(2)], gone_after=2)
    assert set(board(warehouse)) == {1, 2}


def test_an_empty_api_is_not_a_reset(warehouse: Warehouse) -> None:
    hold(warehouse, [batch(1)])
    for _ in range(4):
        listing(warehouse, [])
    assert board(warehouse) == {1: "web-1"}  # an empty listing reaches nothing


def test_a_version_1_warehouse_is_migrated(warehouse: Warehouse) -> None:
    hold(warehouse, [batch(1)])
    for statement in (
        "DROP VIEW batch_leaderboard",
        "ALTER TABLE batches DROP COLUMN gone_at",
        "ALTER TABLE batches DROP COLUMN absent_listings",
    ):
        warehouse.execute(statement)
    with warehouse.transaction() as tx:
        tx.set_state("meta:schema_version", "1")
    warehouse.ensure_schema()
    assert board(warehouse) == {1: "web-1"}
    assert warehouse.state()["meta:schema_version"] == "2"
    for _ in range(3):
        listing(warehouse, [batch(2)])
    assert board(warehouse) == {2: "web-2"}

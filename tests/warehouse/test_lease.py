"""The writer lease and the warehouse's identity, on real processes, real links and a real `rm`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cohortflow.errors import WarehouseError, WarehouseGone, WarehouseLocked
from cohortflow.records import BatchRecord
from cohortflow.state import LOG_KEY
from cohortflow.warehouse import Warehouse, open_warehouse
from tests.helpers import tiny_sources

HOLDER = """
import sys, time
from cohortflow.warehouse import open_warehouse
wh = open_warehouse(sys.argv[1], writer=True)
wh.ensure_schema()
wh.acquire_writer()
print("holding", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Start a real process that takes the writer lease on a target and keeps it until stdin closes."""
    procs: list[subprocess.Popen[str]] = []

    def start(target: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, target], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "holding"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.communicate()  # reaps it and closes its pipes


def second_run(target: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`cohortflow run --once` against ``target`` (good sources: it stops at the lease)."""
    command = [
        *(sys.executable, "-m", "cohortflow", "run", "--once", "--quiet", "--warehouse", target),
        *tiny_sources(tmp_path / "sources"),
        *("--batches-url", "http://127.0.0.1:9/batches"),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _aliases(db: Path, tmp_path: Path) -> dict[str, str]:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "symlink.db").symlink_to(db)
    os.link(db, elsewhere / "hardlink.db")
    return {
        "same path": str(db),
        "symlink": str(elsewhere / "symlink.db"),
        "hard link": str(elsewhere / "hardlink.db"),
        "dot-dot spelling": str(elsewhere / ".." / db.name),
        "sqlite URL": f"sqlite://{db}",
    }


def test_a_second_writer_through_any_path_is_refused_with_the_first_ones_pid(
    tmp_path: Path, holder: Callable[[str], subprocess.Popen[str]]
) -> None:
    db = tmp_path / "warehouse.db"
    first = holder(str(db))
    for side_file in tmp_path.glob("warehouse.db*.lock"):  # nothing beside the file carries the lease
        side_file.unlink()
    for how, target in _aliases(db, tmp_path).items():
        done = second_run(target, tmp_path)
        assert done.returncode == 1, (how, done.stderr)
        assert "Traceback" not in done.stderr
        assert f"pid {first.pid}" in done.stderr, (how, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_lease_is_free_once_the_holder_is_killed(
    tmp_path: Path, holder: Callable[[str], subprocess.Popen[str]]
) -> None:
    db = tmp_path / "warehouse.db"
    first = holder(str(db))
    first.kill()
    first.communicate()
    with open_warehouse(str(db), writer=True) as wh:
        wh.acquire_writer()
        assert wh.state()["meta:writer"]["pid"] == os.getpid()


def test_the_postgres_lease_is_per_database_and_names_the_holder(
    pg_database: Callable[[], str], holder: Callable[[str], subprocess.Popen[str]]
) -> None:
    url, other = pg_database(), pg_database()
    first = holder(url)
    with open_warehouse(url, writer=True) as second, pytest.raises(WarehouseLocked, match=f"pid {first.pid}"):
        second.acquire_writer()
    with open_warehouse(other, writer=True) as elsewhere:  # another database on the same server is free
        elsewhere.ensure_schema()
        elsewhere.acquire_writer()


def test_a_postgres_writer_that_lost_its_lock_commits_nothing(pg_url: str) -> None:
    with open_warehouse(pg_url, writer=True) as wh:
        wh.ensure_schema()
        wh.acquire_writer()
        _commit_a_batch(wh, 1)
        wh.execute("SELECT pg_advisory_unlock_all()")  # as if an operator freed it under us
        with pytest.raises(WarehouseLocked, match="lost its writer lock"):
            _commit_a_batch(wh, 2)
        assert wh.execute("SELECT id FROM batches") == [(1,)]


def _writer(db: Path) -> Warehouse:
    wh = open_warehouse(str(db), writer=True)
    wh.ensure_schema()
    wh.acquire_writer()
    return wh


def _commit_a_batch(wh: Warehouse, n: int) -> None:
    with wh.transaction() as tx:
        tx.add_batches([BatchRecord(n, f"b{n}", "2026-01-01 00:00:00.000000")])


def test_a_deleted_warehouse_stops_the_writer_and_is_not_written(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.db"
    with _writer(db) as wh:
        _commit_a_batch(wh, 1)
        db.unlink()
        with pytest.raises(WarehouseGone, match="was deleted"):
            _commit_a_batch(wh, 2)
    assert not db.exists()
    assert not list(tmp_path.glob("warehouse.db-*")), (
        "no WAL left to be replayed into a new file of that name"
    )


def test_a_replaced_warehouse_stops_the_writer_and_the_new_file_is_untouched(tmp_path: Path) -> None:
    db, other = tmp_path / "warehouse.db", tmp_path / "other.db"
    with _writer(other) as wh:
        _commit_a_batch(wh, 7)
    with _writer(db) as wh:
        _commit_a_batch(wh, 1)
        os.replace(other, db)
        with pytest.raises(WarehouseGone, match="replaced"):
            _commit_a_batch(wh, 2)
    with open_warehouse(str(db)) as reader:
        assert reader.execute("SELECT id FROM batches") == [(7,)]


def test_a_moved_warehouse_keeps_everything_committed_before_the_move(tmp_path: Path) -> None:
    db, moved = tmp_path / "warehouse.db", tmp_path / "moved.db"
    with _writer(db) as wh:
        for n in (1, 2):
            _commit_a_batch(wh, n)
        db.rename(moved)
        with pytest.raises(WarehouseGone, match="deleted"):
            _commit_a_batch(wh, 3)
    with open_warehouse(str(moved)) as reader:
        assert reader.execute("SELECT id FROM batches ORDER BY id") == [(1,), (2,)]


def test_a_following_pipeline_stops_within_a_tick_when_its_warehouse_is_removed(tmp_path: Path) -> None:
    from cohortflow.simulator.process import SimulatorProcess

    data, db = tmp_path / "data", tmp_path / "warehouse.db"
    with SimulatorProcess(data, "--seed", "5", "--interval-ms", "20", "--history-test-runs", "2000") as sim:
        run = subprocess.Popen(
            [
                *(sys.executable, "-m", "cohortflow", "run", "--quiet", "--warehouse", str(db)),
                *("--students-db", str(data / "students.db"), "--test-runs-log", str(data / "test_runs.log")),
                *("--batches-url", f"{sim.url}/batches"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        _await(lambda: _committed_log(db))
        db.unlink()
        _, stderr = run.communicate(timeout=60)  # the stream keeps it busy: the next commit notices
    assert run.returncode == 1
    assert "was deleted" in stderr and "Traceback" not in stderr
    assert not db.exists()


def _committed_log(db: Path) -> bool:
    if not db.exists():
        return False
    with open_warehouse(str(db)) as wh:
        try:
            return bool(wh.execute("SELECT 1 FROM pipeline_state WHERE key = ?", (LOG_KEY,)))
        except WarehouseError:  # the schema is not there yet
            return False


def _await(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)

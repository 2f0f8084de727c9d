"""The SQLite WAL stays bounded while real analyst processes hold 2 s read transactions in a loop."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cohortflow.simulator.process import SimulatorProcess
from cohortflow.testing.analysts import Analysts, WalWatch
from cohortflow.warehouse.wal import SOFT_LIMIT, WalGuard

WAL_BOUND = 64 << 20


def _follow(data: Path, url: str, warehouse: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "cohortflow", "run", "--quiet", "--warehouse", str(warehouse)),
            *("--students-db", str(data / "students.db"), "--test-runs-log", str(data / "test_runs.log")),
            *("--batches-url", f"{url}/batches"),
        ],
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_wal_stays_under_64_mib_with_four_long_readers_at_100x(tmp_path: Path) -> None:
    data, warehouse = tmp_path / "data", tmp_path / "warehouse.db"
    watch = WalWatch(warehouse)
    history = ("--history-batches", "50", "--history-students", "500", "--history-test-runs", "20000")
    with SimulatorProcess(data, "--seed", "3", "--interval-ms", "5", *history) as sim:
        pipeline = _follow(data, sim.url, warehouse)
        try:
            deadline = time.monotonic() + 120
            while watch.last_stamp is None:  # the pipeline has committed the log once
                assert time.monotonic() < deadline and pipeline.poll() is None
                if warehouse.exists():
                    watch.sample()
                time.sleep(0.1)
            with Analysts(warehouse, count=4, hold=2.0):
                # Until the WAL passed the soft limit and came back, or long past when it should have.
                deadline = time.monotonic() + 240
                while not _truncated_after_soft_limit(watch.wal_sizes) and time.monotonic() < deadline:
                    watch.watch(5.0)
                watch.watch(5.0)
        finally:
            pipeline.terminate()
            pipeline.wait(timeout=60)
    figures = watch.figures()
    assert max(watch.wal_sizes) < WAL_BOUND, figures
    assert _truncated_after_soft_limit(watch.wal_sizes), f"the WAL never came back down: {figures}"
    assert pipeline.returncode == 0
    later = [t for t in watch.commit_times if t > watch.commit_times[-1] - 5.0]
    assert len(later) >= 2, f"the pipeline stopped committing: {figures}"


def _truncated_after_soft_limit(sizes: list[int]) -> bool:
    """Whether the WAL grew past the soft limit and was later cut to under a quarter of it."""
    peak = next((i for i, size in enumerate(sizes) if size >= SOFT_LIMIT), None)
    return peak is not None and any(size < SOFT_LIMIT // 4 for size in sizes[peak:])


def _grow_wal(conn: sqlite3.Connection, guard: WalGuard, past: int) -> None:
    while guard.size() < past:
        conn.execute("INSERT INTO filler (blob) VALUES (randomblob(65536))")


def test_a_reader_that_never_lets_go_costs_one_bounded_wait_then_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "pinned.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE students (lessons_completed INTEGER)")
    conn.execute("CREATE TABLE filler (blob BLOB)")
    guard = WalGuard(db, soft_limit=1 << 20, patience=0.5)
    with Analysts(db, count=1, hold=600.0):  # one transaction open for the whole test
        _grow_wal(conn, guard, 2 << 20)
        began = time.monotonic()
        guard.after_commit(conn)
        waited = time.monotonic() - began
        assert guard.backoff.failures == 1 and guard.truncations == 0
        assert "cannot shrink" in caplog.text
        assert waited < 30, "the wait is bounded by the patience, not by the reader"
        guard.after_commit(conn)  # backing off: no second wait at once
        assert guard.backoff.failures == 1
    guard.backoff.next_at = 0.0  # the reader is gone: the next try truncates
    guard.after_commit(conn)
    assert guard.truncations == 1 and guard.size() == 0
    conn.close()

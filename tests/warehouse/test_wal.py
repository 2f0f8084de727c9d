"""The SQLite WAL stays bounded while real analyst processes hold 2 s read transactions in a loop."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from cohortflow.simulator.process import SimulatorProcess
from cohortflow.testing.analysts import Analysts, WalWatch
from cohortflow.warehouse.wal import SOFT_LIMIT

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

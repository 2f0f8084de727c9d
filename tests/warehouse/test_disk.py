"""Real file systems: a tmpfs that fills up mid-backfill, and a read-only mount (needs root to mount)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cohortflow.simulator.process import SimulatorProcess
from cohortflow.warehouse import open_warehouse
from tests.engines.test_backfill_commits import HISTORY, INTERVAL, committed_offset
from tests.helpers import generate
from tests.support import unavailable
from tests.support.pipeline import assert_matches_recompute, catch_up


def _mount(where: Path, options: str) -> None:
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, check=False
    )
    if done.returncode:
        unavailable(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs, unmounted after the test."""
    where = tmp_path / "disk"
    where.mkdir()
    _mount(where, "size=3m")
    yield where
    subprocess.run(["umount", str(where)], check=True)


def test_a_full_disk_keeps_what_was_committed_says_what_to_free_and_resumes(
    tmp_path: Path, small_disk: Path
) -> None:
    data, warehouse = tmp_path / "data", small_disk / "warehouse.db"
    # 40k students: the warehouse outgrows the 3 MiB disk whatever the pace of commits, and the
    # first commit (one 20k-student page and the log read meanwhile) still fits
    generate(data, *HISTORY, "--history-students", "40000", "--history-test-runs", "300000")
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        full = catch_up(data, sim.url, str(warehouse), *INTERVAL)
        assert full.returncode == 1, full.stderr
        assert "is full" in full.stderr and "free space on that disk" in full.stderr
        assert "Traceback" not in full.stderr and len(full.stderr.strip().splitlines()) == 1, full.stderr
        kept = committed_offset(warehouse)
        assert 0 < kept < (data / "test_runs.log").stat().st_size, "commits before the disk filled are kept"
        with open_warehouse(str(warehouse)) as wh:
            assert wh.execute("PRAGMA integrity_check") == [("ok",)]
        subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)  # space freed
        done = catch_up(data, sim.url, str(warehouse), *INTERVAL)
        assert done.returncode == 0, done.stderr
        assert_matches_recompute(data, sim.url, str(warehouse))


def test_a_warehouse_on_a_read_only_mount_is_one_clear_line(tmp_path: Path) -> None:
    where, data = tmp_path / "ro", tmp_path / "data"
    where.mkdir()
    generate(data, "--history-batches", "1", "--history-students", "2", "--history-test-runs", "5")
    _mount(where, "size=1m,ro")
    try:
        done = catch_up(data, "http://127.0.0.1:9", str(where / "warehouse.db"))
    finally:
        subprocess.run(["umount", str(where)], check=True)
    assert done.returncode == 1
    assert "read-only file system" in done.stderr and "Traceback" not in done.stderr, done.stderr

"""Real file systems: a tmpfs that fills up mid-backfill, and a read-only mount (needs root to mount)."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from cohortflow.simulator.process import SimulatorProcess
from cohortflow.warehouse import open_warehouse
from tests.engines.test_backfill_commits import HISTORY, INTERVAL, committed_offset
from tests.helpers import generate
from tests.support import unavailable
from tests.support.pipeline import assert_matches_recompute, catch_up, pipeline_cmd
from tests.support.wait import wait_until


def _mount(where: Path, options: str) -> None:
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, check=False
    )
    if done.returncode:
        unavailable(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 MiB tmpfs, unmounted after the test."""
    where = tmp_path / "disk"
    where.mkdir()
    _mount(where, "size=64m")
    yield where
    subprocess.run(["umount", str(where)], check=True)


def _fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` (another program filling the disk mid-backfill)."""
    filler, block = disk / "filler", b"\0" * (1 << 20)
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    with filler.open("ab", buffering=0) as f, suppress(OSError):
        while True:  # the last bytes, smaller than a block
            f.write(b"\0" * 4096)
    return filler


def test_a_full_disk_keeps_what_was_committed_says_what_to_free_and_resumes(
    tmp_path: Path, small_disk: Path
) -> None:
    data, warehouse = tmp_path / "data", small_disk / "warehouse.db"
    generate(data, *HISTORY, "--history-test-runs", "1000000")
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        backfill = subprocess.Popen(
            pipeline_cmd(data, sim.url, str(warehouse), "--once", *INTERVAL),
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(lambda: committed_offset(warehouse) > 0, 120, "the backfill's first commit")
        filler = _fill(small_disk)
        _, err = backfill.communicate(timeout=120)
        assert backfill.returncode == 1, err
        assert "is full" in err and "free space on that disk" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        kept = committed_offset(warehouse)
        assert 0 < kept < (data / "test_runs.log").stat().st_size, "commits before the disk filled are kept"
        with open_warehouse(str(warehouse)) as wh:
            assert wh.execute("PRAGMA integrity_check") == [("ok",)]
        filler.unlink()  # space freed
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

"""A backfill commits every few seconds: kill -9 in the middle loses at most one interval, never all."""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import pytest

from cohortflow.errors import CohortflowError
from cohortflow.simulator.process import SimulatorProcess
from cohortflow.state import Cursors
from cohortflow.warehouse import open_warehouse
from tests.helpers import generate
from tests.support.pipeline import assert_matches_recompute, catch_up, pipeline_cmd

HISTORY = ("--seed", "4", "--history-batches", "200", "--history-students", "3000")
INTERVAL = ("--commit-seconds", "0.2", "--chunk-bytes", str(256 << 10))


def committed_offset(warehouse: Path) -> int:
    """The log offset the warehouse has committed (0 before the first commit)."""
    try:
        with open_warehouse(str(warehouse)) as wh:
            return Cursors.from_state(wh.state()).log.offset
    except CohortflowError:  # not created yet
        return 0


def await_commits(proc: subprocess.Popen[bytes], warehouse: Path, after: int, commits: int) -> int:
    """Wait while the backfill runs until its committed offset moved ``commits`` times; return it."""
    seen, offset = 0, after
    deadline = time.monotonic() + 240
    while seen < commits:
        assert proc.poll() is None, "the backfill ended before it committed again: it must commit as it goes"
        assert time.monotonic() < deadline, "no commit in time"
        now = committed_offset(warehouse)
        seen += now != offset
        offset = now
        time.sleep(0.05)
    return offset


@pytest.mark.slow
def test_kill_9_during_a_backfill_keeps_the_committed_intervals(tmp_path: Path) -> None:
    data, warehouse = tmp_path / "data", tmp_path / "warehouse.db"
    generate(data, *HISTORY, "--history-test-runs", "3000000")  # outlasts 5 kills at any parse speed
    log_size = (data / "test_runs.log").stat().st_size
    progress = [0]
    rng = random.Random(20261201)
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        for _ in range(5):
            proc = subprocess.Popen(
                pipeline_cmd(data, sim.url, str(warehouse), "--once", *INTERVAL), stderr=subprocess.DEVNULL
            )
            offset = await_commits(proc, warehouse, progress[-1], commits=1)
            time.sleep(rng.uniform(0.0, 0.2))  # then kill at any moment of the next interval
            proc.kill()  # SIGKILL mid-backfill
            proc.wait()
            progress.append(committed_offset(warehouse))
            assert progress[-1] >= offset
        assert progress == sorted(set(progress)), (
            f"every run must add to what the last one committed: {progress}"
        )
        assert progress[-1] < log_size, "the kills must land before the end of the history"
        done = catch_up(data, sim.url, str(warehouse))
        assert done.returncode == 0, done.stderr
        assert_matches_recompute(data, sim.url, str(warehouse))

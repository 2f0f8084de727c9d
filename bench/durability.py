"""Workload 5, durability: the WAL under long readers, work lost per kill -9, the cost of commits.

* WAL: the simulator streams at 100x (``--interval-ms 5``), ``cohortflow run``
  follows, and four analyst processes (`cohortflow.testing.analysts`) hold 2 s
  read transactions back to back; the WAL size and the gaps between the
  pipeline's commits are sampled for a while.
* Kill: a 1M-line backfill is killed with SIGKILL at a random moment after
  each run's first commit (so every run can make progress); the work lost per
  kill is the time since the last commit an observer saw before it.
* Commit cost: the same backfill with the default ``--commit-seconds`` against
  one transaction per ``--txn-bytes`` (the old behaviour), interleaved.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from cohortflow.config import PipelineConfig
from cohortflow.simulator.process import SimulatorProcess
from cohortflow.state import Cursors
from cohortflow.testing.analysts import Analysts, WalWatch
from cohortflow.warehouse import open_warehouse
from common import Result, Sizes, cohortflow, median, served, source_options, status

WAL_TARGET_MIB = 64
REGRESSION_TARGET = 1.05
ONE_TRANSACTION = ("--commit-seconds", "1000000")
CHUNK_SLACK_S = 2.0  # a commit waits for the chunk in hand (16 MiB: about a second here)


def wal_under_readers(scratch: Path, history_sizes: Sizes, seconds: float) -> dict[str, float]:
    """Follow at 100x with four 2 s readers; WAL and commit-gap figures."""
    base = scratch / "wal"
    shutil.rmtree(base, ignore_errors=True)
    data, warehouse = base / "data", base / "warehouse.db"
    history = (
        *("--history-batches", str(history_sizes.batches), "--history-students", str(history_sizes.students)),
        *("--history-test-runs", str(history_sizes.lines)),
    )
    watch = WalWatch(warehouse)
    with SimulatorProcess(data, "--seed", "3", "--interval-ms", "5", *history) as sim:
        cmd = cohortflow(
            "run", "--quiet", *source_options(data, f"{sim.url}/batches"), "--warehouse", str(warehouse)
        )
        proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        try:
            while watch.last_stamp is None:
                if warehouse.exists():
                    watch.sample()
                time.sleep(0.1)
            with Analysts(warehouse, count=4, hold=2.0):
                watch.watch(seconds)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return watch.figures()


def _offset(warehouse: Path) -> int:
    try:
        with open_warehouse(str(warehouse)) as wh:
            return Cursors.from_state(wh.state()).log.offset
    except Exception:  # not created yet
        return 0


def kills(data_dir: Path, scratch: Path, count: int, interval: float) -> dict[str, Any]:
    """Kill a backfill ``count`` times at random moments; seconds of work lost per kill."""
    warehouse = scratch / "killed.db"
    rng = random.Random(7)
    lost: list[float] = []
    offsets = [0]
    with served(data_dir) as sim:
        cmd = cohortflow(
            *("run", "--once", "--quiet", "--commit-seconds", str(interval)),
            *source_options(data_dir, f"{sim.url}/batches"),
        )
        for _ in range(count):
            proc = subprocess.Popen([*cmd, "--warehouse", str(warehouse)], stderr=subprocess.DEVNULL)
            last_commit, offset = time.monotonic(), offsets[-1]
            kill_at: float | None = None  # a random moment after this run's first commit
            while proc.poll() is None and (kill_at is None or time.monotonic() < kill_at):
                now = _offset(warehouse)
                if now != offset:
                    last_commit, offset = time.monotonic(), now
                    kill_at = kill_at or last_commit + rng.uniform(0.0, interval + 1.0)
                time.sleep(0.02)
            if proc.poll() is not None:  # it reached the end before the kill
                break
            proc.kill()
            proc.wait()
            lost.append(time.monotonic() - last_commit)
            offsets.append(_offset(warehouse))
    size = (data_dir / "test_runs.log").stat().st_size
    return {"lost_s": lost, "offsets": offsets, "log_bytes": size, "interval_s": interval}


def commit_cost(data_dir: Path, scratch: Path, repeats: int) -> dict[str, list[float]]:
    """Wall seconds of the backfill with periodic commits and as one transaction, interleaved."""
    times: dict[str, list[float]] = {"periodic": [], "one": []}
    with served(data_dir) as sim:
        cmd = cohortflow("run", "--once", "--quiet", *source_options(data_dir, f"{sim.url}/batches"))
        for i in range(repeats):
            for name, extra in (("periodic", ()), ("one", ONE_TRANSACTION)):
                warehouse = scratch / f"cost-{name}-{i}.db"
                began = time.perf_counter()
                subprocess.run([*cmd, "--warehouse", str(warehouse), *extra], check=True)
                times[name].append(time.perf_counter() - began)
                for path in scratch.glob(f"cost-{name}-{i}.db*"):
                    path.unlink()
    return times


def results(
    wal: dict[str, float],
    killed: dict[str, Any],
    cost: dict[str, list[float]],
    sizes: Sizes,
    killed_size: Sizes,
) -> list[Result]:
    interval = PipelineConfig.commit_seconds
    lost = killed["lost_s"]
    progress = killed["offsets"]
    ratio = median(cost["periodic"]) / median(cost["one"])
    return [
        Result(
            "Durability: WAL with 4 analysts holding 2 s reads, following at 100x",
            "peak WAL size; longest gap between commits",
            f"peak {wal['wal_peak_mib']:.1f} MiB, last {wal['wal_last_mib']:.1f} MiB; "
            f"longest commit gap {wal['longest_commit_gap_s']:.1f} s "
            f"({wal['commits_seen']:.0f} commits seen)",
            "",
            "",
            f"WAL < {WAL_TARGET_MIB} MiB",
            status(wal["wal_peak_mib"] < WAL_TARGET_MIB),
            wal,
        ),
        Result(
            f"Durability: kill -9 during a {killed_size.label} backfill ({len(lost)} kills, "
            f"--commit-seconds {killed['interval_s']:g})",
            "work lost per kill (since the last commit)",
            f"median {median(lost) if lost else 0:.1f} s, max {max(lost, default=0):.1f} s; progress "
            + ", ".join(f"{o / killed['log_bytes']:.0%}" for o in progress[1:]),
            "",
            "",
            f"≤ one interval + {CHUNK_SLACK_S:g} s (one chunk)",
            status(
                progress == sorted(progress) and max(lost, default=0) <= killed["interval_s"] + CHUNK_SLACK_S
            ),
            killed,
        ),
        Result(
            f"Durability: {sizes.label} backfill, commit every {interval:g} s vs one transaction",
            "median wall time",
            f"{median(cost['periodic']):.2f} s vs {median(cost['one']):.2f} s",
            "one transaction",
            f"{ratio:.3f}x",
            f"≤ {REGRESSION_TARGET}x",
            status(ratio <= REGRESSION_TARGET),
            cost,
        ),
    ]

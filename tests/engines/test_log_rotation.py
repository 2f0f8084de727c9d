"""The log rotated under a live writer while `cohortflow run` follows it, crashes, or is misconfigured.

Real processes throughout: the simulator streams and rotates (``--rotate-every``,
both styles), the pipeline runs as a subprocess and is killed with SIGKILL;
the end state is compared with the naive recompute, which reads the rotated
files by their logrotate numbers (the pipeline orders them otherwise).
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cohortflow.errors import WarehouseError
from cohortflow.simulator.process import SimulatorProcess
from cohortflow.sources import LogCursor, RunLog
from cohortflow.state import LOG_KEY
from cohortflow.warehouse import open_warehouse
from tests.helpers import generate
from tests.support.pipeline import assert_matches_recompute, catch_up, pipeline_cmd

# Many students and dirty lines: a lost or doubled line shows in lessons_completed or the quarantine.
SMALL = ("--history-batches", "20", "--history-students", "2000", "--history-test-runs", "3000")
MESSY = ("--dirty-rate", "0.05", "--unknown-student-rate", "0.05")
STYLES = ["rename", "copytruncate"]


def wait_until(condition: Callable[[], bool], timeout_s: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout_s:.0f} s"
        time.sleep(0.05)


def rotated(data: Path) -> list[Path]:
    return [p for p in data.glob("test_runs.log.*") if p.suffix[1:].isdigit()]


def log_lag(data: Path, warehouse: str) -> int | None:
    """Bytes of the log (all files) the warehouse has not committed yet; None before a commit."""
    try:
        with open_warehouse(warehouse) as wh:
            committed = wh.state().get(LOG_KEY)
    except WarehouseError:
        return None
    return None if committed is None else RunLog(data / "test_runs.log").lag(LogCursor.from_json(committed))


def committed_log(warehouse: str) -> dict[str, object] | None:
    try:
        with open_warehouse(warehouse) as wh:
            cursor: dict[str, object] | None = wh.state().get(LOG_KEY)
            return cursor
    except WarehouseError:
        return None


@pytest.mark.parametrize("style", STYLES)
def test_follow_mode_reads_every_line_across_rotations(tmp_path: Path, style: str) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    rotate = ("--rotate-every", "16k", "--rotate-style", style)
    sim = SimulatorProcess(data, "--seed", "6", "--interval-ms", "5", *SMALL, *MESSY, *rotate).start()
    follower = subprocess.Popen(pipeline_cmd(data, sim.url, warehouse), stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: committed_log(warehouse) is not None, what="a first commit")
        already = len(rotated(data))
        wait_until(lambda: len(rotated(data)) >= already + 8, what="8 rotations while it follows")
        assert sim.stop() == 0  # every burst whole; the API goes away, the log must still flow
        wait_until(lambda: log_lag(data, warehouse) == 0 or follower.poll() is not None, what="log read")
        assert follower.poll() is None, "the follower died"
    finally:
        sim.stop()
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    with SimulatorProcess(data, "--no-stream", "--serve") as frozen:
        done = catch_up(data, frozen.url, warehouse)  # only the batches are left to read
        assert done.returncode == 0, done.stderr
        assert_matches_recompute(data, frozen.url, warehouse)
        fresh = str(tmp_path / "fresh.db")  # a rebuild reads the rotated history too
        assert catch_up(data, frozen.url, fresh).returncode == 0
        assert_matches_recompute(data, frozen.url, fresh)


@pytest.mark.slow
@pytest.mark.parametrize("style", STYLES)
def test_kill_9_while_the_log_rotates_loses_and_doubles_nothing(tmp_path: Path, style: str) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    rng = random.Random(f"rotation-{style}")
    small_txns = ("--chunk-bytes", "16384", "--txn-bytes", "65536")
    rotate = ("--rotate-every", "8k", "--rotate-style", style)
    with SimulatorProcess(data, "--seed", "12", "--interval-ms", "5", *SMALL, *MESSY, *rotate) as sim:
        for run in range(10):
            before = committed_log(warehouse)
            err = tmp_path / f"run-{run}.err"
            with err.open("w") as err_file:
                proc = subprocess.Popen(
                    pipeline_cmd(data, sim.url, warehouse, *small_txns),
                    stdout=subprocess.DEVNULL,
                    stderr=err_file,
                )
            # Kill only once it committed (startup alone takes seconds on a loaded machine);
            # the files rotate several times while it is down and starting again.
            wait_until(lambda: committed_log(warehouse) != before, what="a commit")  # noqa: B023
            time.sleep(rng.uniform(0.0, 2.0))  # often caught up on the live file, sometimes not
            assert proc.poll() is None, f"it must be killed while still working: {err.read_text()}"
            proc.kill()
            proc.wait()
    assert len(rotated(data)) >= 20
    with SimulatorProcess(data, "--no-stream", "--serve") as frozen:
        done = catch_up(data, frozen.url, warehouse)
        assert done.returncode == 0, done.stderr
        assert_matches_recompute(data, frozen.url, warehouse)


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    data = tmp_path_factory.mktemp("frozen") / "data"
    generate(
        data,
        "--seed",
        "8",
        "--history-batches",
        "3",
        "--history-students",
        "20",
        "--history-test-runs",
        "200",
    )
    return data, "http://127.0.0.1:9/batches-unused"


def _run_with_log(data: Path, log: Path, warehouse: Path, *extra: str) -> list[str]:
    cmd = pipeline_cmd(data, "http://127.0.0.1:9", str(warehouse), *extra)
    cmd[cmd.index("--test-runs-log") + 1] = str(log)
    return cmd


@pytest.mark.parametrize(
    ("where", "once", "message"),
    [
        ("no-such-dir/test_runs.log", False, "no-such-dir); check --test-runs-log"),
        (".", False, "is a directory, not a log file"),
        ("missing.log", True, "missing.log` does not exist; check --test-runs-log"),
    ],
)
def test_bad_log_paths_fail_at_once_with_one_line(
    frozen: tuple[Path, str], tmp_path: Path, where: str, once: bool, message: str
) -> None:
    data, _ = frozen
    cmd = _run_with_log(data, tmp_path / where, tmp_path / "w.db", *(("--once",) if once else ()))
    started = time.monotonic()
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert time.monotonic() - started < 30
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert message in lines[0] and "cohortflow: " in lines[0], lines[0]


def test_follow_mode_waits_for_a_missing_log_and_says_so(frozen: tuple[Path, str], tmp_path: Path) -> None:
    data, _ = frozen
    log, warehouse = tmp_path / "later.log", tmp_path / "w.db"
    follower = subprocess.Popen(_run_with_log(data, log, warehouse), stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: log_lag(tmp_path, str(warehouse)) is None and warehouse.exists(), what="start")
        time.sleep(0.5)  # let it look at the missing log a few times: it must keep running
        assert follower.poll() is None
        log.write_bytes((data / "test_runs.log").read_bytes())

        def ingested() -> bool:
            with open_warehouse(str(warehouse)) as wh:
                return LogCursor.from_json(wh.state().get(LOG_KEY)).offset == log.stat().st_size

        wait_until(ingested, what="the log ingested")
    finally:
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert "does not exist (yet); waiting for it" in err
    assert err.count("waiting for it") == 1, "said once, not per attempt"

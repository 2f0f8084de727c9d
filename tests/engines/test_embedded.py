"""The embedded engine on real processes: the simulator streams, the pipeline follows and crashes."""

from __future__ import annotations

import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cohortflow.config import PipelineConfig
from cohortflow.engines.embedded import EmbeddedEngine
from cohortflow.errors import WarehouseError
from cohortflow.simulator.process import SimulatorProcess
from cohortflow.state import HEALTH_KEY
from cohortflow.warehouse import open_warehouse
from tests.helpers import generate, snapshot
from tests.support.pipeline import MESSY, assert_matches_recompute, catch_up, pipeline_cmd

HISTORY = ("--history-batches", "130", "--history-students", "900", "--history-test-runs", "40000")


@pytest.fixture(params=["sqlite", "postgres"])
def warehouse_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return str(tmp_path / "warehouse.db")


def test_follow_a_live_stream_then_catch_up_equals_recompute(tmp_path: Path, warehouse_target: str) -> None:
    data = tmp_path / "data"
    with SimulatorProcess(data, "--seed", "7", "--interval-ms", "10", *HISTORY, *MESSY) as sim:
        follower = subprocess.Popen(
            pipeline_cmd(data, sim.url, warehouse_target), stderr=subprocess.PIPE, text=True
        )
        time.sleep(6)
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=60)
        assert follower.returncode == 0, err
    with SimulatorProcess(data, "--no-stream", "--serve") as frozen:
        done = catch_up(data, frozen.url, warehouse_target)
        assert done.returncode == 0, done.stderr
        assert_matches_recompute(data, frozen.url, warehouse_target)


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_target", ["sqlite", "postgres"], indirect=True)
def test_kill_9_at_random_moments_loses_and_doubles_nothing(tmp_path: Path, warehouse_target: str) -> None:
    data = tmp_path / "data"
    rng = random.Random(20261122)
    small_txns = ("--chunk-bytes", "65536", "--txn-bytes", "262144")  # commit often: kills land in commits
    killed_mid_work = 0
    with SimulatorProcess(data, "--seed", "11", "--interval-ms", "5", *HISTORY, *MESSY) as sim:
        for _ in range(20):
            proc = subprocess.Popen(
                pipeline_cmd(data, sim.url, warehouse_target, *small_txns),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(0.8, 2.0))
            killed_mid_work += proc.poll() is None
            proc.kill()
            proc.wait()
    assert killed_mid_work == 20, "every run must have been killed while it was still working"
    with SimulatorProcess(data, "--no-stream", "--serve") as frozen:
        done = catch_up(data, frozen.url, warehouse_target)
        assert done.returncode == 0, done.stderr
        assert_matches_recompute(data, frozen.url, warehouse_target)


def test_reset_is_detected_and_restart_rebuilds(tmp_path: Path) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    small = ("--history-batches", "12", "--history-students", "80", "--history-test-runs", "3000")
    with SimulatorProcess(data, "--seed", "3", "--no-stream", "--serve", *small) as sim:
        assert catch_up(data, sim.url, warehouse).returncode == 0
    reset = subprocess.run(
        [sys.executable, "-m", "cohortflow", "reset", "--data-dir", str(data)], check=False, timeout=60
    )
    assert reset.returncode == 0
    smaller = ("--history-batches", "5", "--history-students", "30", "--history-test-runs", "1000")
    with SimulatorProcess(data, "--seed", "4", "--no-stream", "--serve", *smaller) as sim:
        refused = catch_up(data, sim.url, warehouse)
        assert refused.returncode == 1
        assert "was reset" in refused.stderr and "--on-reset restart" in refused.stderr
        rebuilt = catch_up(data, sim.url, warehouse, "--on-reset", "restart")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert_matches_recompute(data, sim.url, warehouse)


class _EngineThread(threading.Thread):
    """Run an engine in the background and keep its exception for the test to see."""

    def __init__(self, engine: EmbeddedEngine) -> None:
        super().__init__(daemon=True)
        self.engine, self.stop, self.error = engine, threading.Event(), None

    def run(self) -> None:
        try:
            self.engine.run(self.stop)
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        assert self.error is None, self.error


def _wait_for(condition: Callable[[], bool], runner: _EngineThread, timeout: float = 60.0) -> None:
    """Poll until the condition holds; a warehouse without its schema yet counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        assert runner.is_alive() or runner.error is None, runner.error
        try:
            if condition():
                return
        except WarehouseError:
            pass
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_batch_api_down_keeps_other_sources_flowing_then_catches_up(tmp_path: Path) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    small = ("--history-batches", "20", "--history-students", "150", "--history-test-runs", "5000")
    generate(data, "--seed", "5", *small)
    # A bound socket that never listens refuses connections: the API is down, and no other
    # process can take the port before the simulator does.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    config = PipelineConfig(
        students_db=data / "students.db",
        test_runs_log=data / "test_runs.log",
        batches_url=f"http://127.0.0.1:{port}/batches",
        warehouse=warehouse,
        batches_poll_seconds=0.05,
    )
    runner = _EngineThread(EmbeddedEngine(config))
    runner.start()
    try:
        with open_warehouse(warehouse) as reader:

            def health() -> object:
                return (reader.state().get(HEALTH_KEY) or {}).get("ok")

            _wait_for(lambda: len(snapshot(reader)["students"]) == 150, runner)
            _wait_for(lambda: health() is False, runner)
            assert snapshot(reader)["batches"] == {}
            holder.close()
            with SimulatorProcess(data, "--no-stream", "--serve", "--port", str(port)) as sim:
                _wait_for(lambda: len(snapshot(reader)["batches"]) == 20, runner)
                _wait_for(lambda: health() is True, runner)
                runner.finish()
                assert_matches_recompute(data, sim.url, warehouse)
    finally:
        holder.close()
        runner.finish()


def test_postgres_restarts_during_a_follow_run_are_survived(
    tmp_path: Path, pg_server: Any, pg_url: str
) -> None:
    data = tmp_path / "data"
    with SimulatorProcess(data, "--seed", "13", "--interval-ms", "10", *HISTORY, *MESSY) as sim:
        follower = subprocess.Popen(pipeline_cmd(data, sim.url, pg_url), stderr=subprocess.PIPE, text=True)
        for _ in range(2):
            time.sleep(3)
            pg_server.restart()
        time.sleep(3)
        assert follower.poll() is None, "the pipeline must outlive server restarts"
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=60)
        assert follower.returncode == 0, err
        assert "reconnecting" in err
        assert "password" not in err.lower()
    with SimulatorProcess(data, "--no-stream", "--serve") as frozen:
        done = catch_up(data, frozen.url, pg_url)
        assert done.returncode == 0, done.stderr
        assert_matches_recompute(data, frozen.url, pg_url)


def test_a_students_db_locked_for_long_is_retried_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    small = ("--history-batches", "3", "--history-students", "40", "--history-test-runs", "500")
    generate(data, "--seed", "8", *small)
    locker = sqlite3.connect(data / "students.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # an upstream writer stuck mid-commit, longer than our 2 s patience
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        config = PipelineConfig(
            students_db=data / "students.db",
            test_runs_log=data / "test_runs.log",
            batches_url=f"{sim.url}/batches",
            warehouse=warehouse,
        )
        runner = _EngineThread(EmbeddedEngine(config))
        runner.start()
        try:
            time.sleep(6)  # several ticks fail on the lock, after batches were read ahead
            assert runner.is_alive(), runner.error
            locker.execute("ROLLBACK")
            with open_warehouse(warehouse) as reader:
                _wait_for(lambda: len(snapshot(reader)["students"]) == 40, runner)
                _wait_for(lambda: runner.engine.batches.settled, runner)
            runner.finish()
            # Batches read ahead while students.db was locked must not be dropped with the failed tick.
            assert_matches_recompute(data, sim.url, warehouse)
        finally:
            locker.close()
            runner.finish()
    assert any("trying again" in r.getMessage() for r in caplog.records)


def test_once_stops_at_the_end_it_saw_while_writers_go_on(tmp_path: Path) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    with SimulatorProcess(data, "--seed", "31", "--interval-ms", "2", *HISTORY) as sim:
        done = catch_up(data, sim.url, warehouse)  # the simulator never stops writing meanwhile
        assert done.returncode == 0, done.stderr
        size_after = (data / "test_runs.log").stat().st_size
    with open_warehouse(warehouse) as wh:
        reached = wh.state()["cursor:test_runs"]["offset"]
    assert 0 < reached <= size_after


def test_once_waits_out_a_locked_students_db_and_still_reaches_the_end(tmp_path: Path) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    generate(
        data,
        "--seed",
        "9",
        "--history-batches",
        "3",
        "--history-students",
        "40",
        "--history-test-runs",
        "800",
    )
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        locker = sqlite3.connect(data / "students.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # after the simulator started: it reads students.db too
        proc = subprocess.Popen(
            pipeline_cmd(data, sim.url, warehouse, "--once"), stderr=subprocess.PIPE, text=True
        )
        time.sleep(3)
        locker.execute("ROLLBACK")
        locker.close()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "trying again" in err
        assert_matches_recompute(data, sim.url, warehouse)

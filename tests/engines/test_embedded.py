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
from cohortflow.errors import SourceUnavailable, WarehouseError
from cohortflow.health import health_key
from cohortflow.simulator.process import SimulatorProcess
from cohortflow.warehouse import open_warehouse
from tests.helpers import expected, generate, snapshot
from tests.naive import Upto, recompute
from tests.support.pipeline import MESSY, assert_matches_recompute, catch_up, pipeline_cmd
from tests.support.wait import wait_until

HISTORY = ("--history-batches", "130", "--history-students", "900", "--history-test-runs", "40000")
SMALL = ("--history-batches", "3", "--history-students", "40")


@pytest.fixture(params=["sqlite", "postgres"])
def warehouse_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return str(tmp_path / "warehouse.db")


def committed_upto(warehouse: str) -> Upto:
    """How far the pipeline's committed cursors reach, as a prefix of the sources."""
    with open_warehouse(warehouse) as wh:
        state = wh.state()
    batches = state.get("cursor:batches") or {}
    return Upto(
        (state.get("cursor:test_runs") or {}).get("offset", 0),
        (state.get("cursor:students") or {}).get("last_id", 0),
        batches.get("created_at"),
        tuple(batches.get("boundary_ids", ())),
    )


def assert_matches_recompute_upto(data: Path, url: str, warehouse: str, upto: Upto) -> None:
    """The warehouse equals the naive model of the prefix its cursors committed."""
    model = recompute(data, f"{url}/batches", upto)
    with open_warehouse(warehouse) as wh:
        got = snapshot(wh)
    want = expected(model)
    assert got["batches"] == want["batches"]
    assert got["students"] == want["students"]
    assert got["lessons"] == want["lessons"]
    got_runs = {reason: n for (source, reason), n in got["quarantine"].items() if source == "test_runs"}
    assert got_runs == model.rejects


def test_follow_a_live_stream_then_catch_up_equals_recompute(tmp_path: Path, warehouse_target: str) -> None:
    data = tmp_path / "data"
    with SimulatorProcess(data, "--seed", "7", "--interval-ms", "10", *HISTORY, *MESSY) as sim:
        history = (data / "test_runs.log").stat().st_size
        follower = subprocess.Popen(
            pipeline_cmd(data, sim.url, warehouse_target), stderr=subprocess.PIPE, text=True
        )

        def followed_the_stream() -> bool:
            assert follower.poll() is None, follower.communicate()[1]
            upto = committed_upto(warehouse_target)
            return upto.log_bytes > history + 20_000 and upto.last_student_id > 900 + 8

        wait_until(followed_the_stream, 120, "the follower committing streamed data", (WarehouseError,))
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=60)
        assert follower.returncode == 0, err
        upto = committed_upto(warehouse_target)
        assert upto.log_bytes > history and upto.batches_until is not None
        assert_matches_recompute_upto(data, sim.url, warehouse_target, upto)  # the follower's own work
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
    with open_warehouse(warehouse) as wh:  # the rebuild keeps the record of what it follows
        assert wh.state()["meta:sources"]["test_runs_log"] == str((data / "test_runs.log").resolve())


class StderrLines:
    """Collect a child's stderr lines as they come, so a test can await one."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.stream = proc.stderr
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self.lines.extend, args=(self.stream,), daemon=True)
        self._reader.start()

    def has(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def text(self) -> str:
        self._reader.join(30)  # the child has exited: its stderr is at its end
        self.stream.close()
        return "".join(self.lines)


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
    """Await the condition while the engine runs; a warehouse without its schema yet is not yet."""

    def engine_ok_and_condition() -> bool:
        assert runner.is_alive() or runner.error is None, runner.error
        return condition()

    wait_until(engine_ok_and_condition, timeout, "the condition", (WarehouseError,), interval=0.05)


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
                return (reader.state().get(health_key("batches")) or {}).get("state") == "ok"

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
        said = StderrLines(follower)
        reached = 0
        for restart in range(3):  # commits before the first restart and after each of two restarts

            def committed_more(since: int = reached) -> int:
                assert follower.poll() is None, "the pipeline must outlive server restarts"
                offset = committed_upto(pg_url).log_bytes
                return offset if offset > since else 0

            reached = wait_until(committed_more, 120, "a commit past the last one", (WarehouseError,))
            if restart < 2:
                pg_server.restart()
        follower.send_signal(signal.SIGTERM)
        follower.wait(timeout=60)
        err = said.text()
        assert follower.returncode == 0, err
        assert "reconnecting" in err
        assert "password" not in err.lower()
    with SimulatorProcess(data, "--no-stream", "--serve") as frozen:
        done = catch_up(data, frozen.url, pg_url)
        assert done.returncode == 0, done.stderr
        assert_matches_recompute(data, frozen.url, pg_url)


def _log_end(data: Path) -> int:
    return (data / "test_runs.log").stat().st_size


def _state(reader: Any, key: str) -> Any:
    return reader.state().get(key) or {}


def test_a_students_db_locked_for_long_is_isolated_and_retried(
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
            with open_warehouse(warehouse) as reader:
                # The log and the batches flow while students.db stays locked; status says so.
                _wait_for(lambda: _state(reader, "cursor:test_runs").get("offset") == _log_end(data), runner)
                _wait_for(lambda: len(snapshot(reader)["batches"]) == 3, runner)
                _wait_for(lambda: _state(reader, health_key("students")).get("state") == "locked", runner)
                assert snapshot(reader)["students"] == {}
                locker.execute("ROLLBACK")
                _wait_for(lambda: len(snapshot(reader)["students"]) == 40, runner)
                _wait_for(lambda: _state(reader, health_key("students")).get("state") == "ok", runner)
                _wait_for(lambda: runner.engine.batches.settled, runner)
            runner.finish()
            assert_matches_recompute(data, sim.url, warehouse)
        finally:
            locker.close()
            runner.finish()
    warned = [r for r in caplog.records if r.name == "cohortflow.health" and r.levelname == "WARNING"]
    assert 1 <= len(warned) <= 2, [r.getMessage() for r in warned]  # once per change, not per retry


def test_once_gives_up_on_a_source_locked_too_long_after_ingesting_the_others(tmp_path: Path) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    generate(
        data,
        "--seed",
        "12",
        "--history-batches",
        "3",
        "--history-students",
        "40",
        "--history-test-runs",
        "600",
    )
    locker = sqlite3.connect(data / "students.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with SimulatorProcess(data, "--no-stream", "--serve") as sim:
            config = PipelineConfig(
                students_db=data / "students.db",
                test_runs_log=data / "test_runs.log",
                batches_url=f"{sim.url}/batches",
                warehouse=warehouse,
                once=True,
                api_patience=3.0,
            )
            with pytest.raises(SourceUnavailable, match="could not finish `students` locked since"):
                EmbeddedEngine(config).run()
    finally:
        locker.close()
    with open_warehouse(warehouse) as reader:
        assert _state(reader, "cursor:test_runs").get("offset") == _log_end(data)
        assert len(snapshot(reader)["batches"]) == 3 and snapshot(reader)["students"] == {}


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
        said = StderrLines(proc)
        try:

            def log_ingested() -> bool:
                assert proc.poll() is None, said.text()
                return _log_ingested(warehouse, _log_end(data))

            wait_until(log_ingested, 120, "the log ingested while students.db is locked")
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        proc.wait(timeout=120)
        err = said.text()
        assert proc.returncode == 0, err
        assert "students" in err and "retrying with backoff" in err
        assert_matches_recompute(data, sim.url, warehouse)


def _log_ingested(warehouse: str, end: int) -> bool:
    try:
        with open_warehouse(warehouse) as reader:
            return bool(_state(reader, "cursor:test_runs").get("offset") == end)
    except WarehouseError:
        return False  # not created yet

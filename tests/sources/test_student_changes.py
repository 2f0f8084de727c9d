"""Students edited or deleted upstream are applied as data (--once and following); resets stay resets."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cohortflow.simulator.process import SimulatorProcess
from cohortflow.warehouse import open_warehouse
from tests.helpers import expected, generate, snapshot
from tests.naive import recompute
from tests.support.pipeline import assert_matches_recompute, catch_up, pipeline_cmd

HISTORY = ("--history-batches", "30", "--history-students", "3000", "--history-test-runs", "20000")


@pytest.fixture(params=["sqlite", "postgres"])
def warehouse_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return str(tmp_path / "warehouse.db")


def _edit(db: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    with sqlite3.connect(db) as conn:
        for sql, params in statements:
            conn.execute(sql, params)
    conn.close()


def _last_id(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (last,) = conn.execute("SELECT max(id) FROM students").fetchone()
    conn.close()
    return int(last)


def test_edits_and_deletes_are_applied_by_once_without_a_rebuild(
    tmp_path: Path, warehouse_target: str
) -> None:
    data, warehouse = tmp_path / "data", warehouse_target
    generate(data, "--seed", "41", *HISTORY)
    db = data / "students.db"
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        assert catch_up(data, sim.url, warehouse).returncode == 0
        last = _last_id(db)
        _edit(
            db,
            ("UPDATE students SET name = 'Renamed Once' WHERE id = ?", (5,)),
            ("UPDATE students SET batch_id = 1 + (batch_id % 30) WHERE id IN (?, ?, ?)", (100, 1500, 2999)),
            ("DELETE FROM students WHERE id IN (?, ?)", (2000, last)),  # the cursor's own row too
        )
        done = catch_up(data, sim.url, warehouse)
        assert done.returncode == 0, done.stderr
        assert "was reset" not in done.stderr
        assert_matches_recompute(data, sim.url, warehouse)
        with open_warehouse(warehouse) as wh:
            assert wh.execute("SELECT name FROM students WHERE id = 5") == [("Renamed Once",)]
            assert wh.execute("SELECT count(*) FROM students WHERE id IN (?, ?)", (2000, last)) == [(0,)]


def test_a_row_that_goes_bad_is_deleted_and_quarantined_once(tmp_path: Path) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    generate(data, "--seed", "42", *HISTORY)
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        assert catch_up(data, sim.url, warehouse).returncode == 0
        _edit(data / "students.db", ("UPDATE students SET name = '  ' WHERE id = ?", (77,)))
        for _ in range(2):
            assert catch_up(data, sim.url, warehouse).returncode == 0
    with open_warehouse(warehouse) as wh:
        assert wh.execute("SELECT count(*) FROM students WHERE id = 77") == [(0,)]
        assert wh.execute("SELECT reason FROM quarantine WHERE source = 'students'") == [("bad_name",)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_following_pipeline_applies_a_stream_of_edits(tmp_path: Path) -> None:
    data, warehouse, port = tmp_path / "data", str(tmp_path / "warehouse.db"), _free_port()
    live = ("--seed", "43", "--interval-ms", "10", "--port", str(port), *HISTORY)
    url = f"http://127.0.0.1:{port}"
    follower = subprocess.Popen(pipeline_cmd(data, url, warehouse), stderr=subprocess.PIPE, text=True)
    try:
        with SimulatorProcess(data, *live, "--edit-rate", "40", "--duration", "6") as sim:
            sim.wait(timeout_s=60)
        assert " edits=" in sim.stderr and " edits=0" not in sim.stderr, sim.stderr
        with SimulatorProcess(data, "--no-stream", "--serve", "--port", str(port)) as frozen:
            want = expected(recompute(data, f"{frozen.url}/batches"))

            def applied() -> bool:
                with open_warehouse(warehouse) as wh:
                    got = snapshot(wh)
                return got["students"] == want["students"] and got["batches"] == want["batches"]

            _wait_until(applied, 90, "the follower never applied the edits")
            assert follower.poll() is None
    finally:
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert "was reset" not in err


@pytest.mark.parametrize("regenerated", ["bigger", "smaller"])
def test_a_table_that_really_started_over_is_still_a_reset(tmp_path: Path, regenerated: str) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    first = ("--history-batches", "12", "--history-students", "300", "--history-test-runs", "2000")
    with SimulatorProcess(data, "--seed", "44", "--no-stream", "--serve", *first) as sim:
        assert catch_up(data, sim.url, warehouse).returncode == 0
    reset = [sys.executable, "-m", "cohortflow", "reset", "--data-dir", str(data)]
    assert subprocess.run(reset, check=False, timeout=60, capture_output=True).returncode == 0
    students = "600" if regenerated == "bigger" else "100"
    again = ("--history-batches", "12", "--history-students", students, "--history-test-runs", "2000")
    with SimulatorProcess(data, "--seed", "45", "--no-stream", "--serve", *again) as sim:
        refused = catch_up(data, sim.url, warehouse)
        assert refused.returncode == 1
        assert "students.db` was reset" in refused.stderr, refused.stderr
        rebuilt = catch_up(data, sim.url, warehouse, "--on-reset", "restart")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert_matches_recompute(data, sim.url, warehouse)

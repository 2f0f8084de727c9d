"""The batch API through a fault-injecting proxy, on real processes: the pipeline ends equal to the recompute.

The simulator serves, ``cohortflow api-faults`` sits in front of it, and ``cohortflow run``
follows the proxy. Once the faults stop, the warehouse must equal the naive recompute
(``tests/naive.py``) read straight from the simulator.
"""

from __future__ import annotations

import itertools
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cohortflow.errors import CohortflowError
from cohortflow.health import health_key
from cohortflow.simulator.faults import KINDS
from cohortflow.simulator.process import FaultProxyProcess, SimulatorProcess
from cohortflow.warehouse import open_warehouse
from tests.helpers import expected, generate, snapshot
from tests.naive import recompute
from tests.support.pipeline import pipeline_cmd
from tests.support.wait import wait_until

HISTORY = ("--history-batches", "260", "--history-students", "300", "--history-test-runs", "3000")
# About a quarter of requests fail or lie: a poll of several pages still gets through often enough.
FAULTS = "5xx=0.03,429=0.03,hang=0.01,reset=0.03,garbage=0.03,stale=0.04,backwards=0.04,broken=0.08"
FOLLOW = ("--batches-reconcile-seconds", "1")


def _control(proxy: FaultProxyProcess, **command: Any) -> dict[str, int]:
    response = httpx.post(f"{proxy.url}/_faults", json=command, timeout=10)
    counts: dict[str, int] = response.json()
    return counts


def _injected(proxy: FaultProxyProcess) -> dict[str, int]:
    counts: dict[str, int] = httpx.get(f"{proxy.url}/_faults", timeout=10).json()
    return counts


def _equal_to_recompute(data: Path, api: str, warehouse: str) -> bool:
    model = recompute(data, f"{api}/batches")
    try:
        with open_warehouse(warehouse) as wh:
            got = snapshot(wh)
            gone = wh.execute("SELECT count(*) FROM batches WHERE gone_at IS NOT NULL")[0][0]
    except CohortflowError:
        return False  # e.g. not created yet
    want = expected(model)
    same = all(got[key] == want[key] for key in ("batches", "students", "lessons"))
    return same and gone == 0


def test_following_through_every_fault_ends_equal_to_recompute(tmp_path: Path) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    sim = SimulatorProcess(data, "--seed", "5", "--interval-ms", "20", *HISTORY).start()
    port = sim.port
    with FaultProxyProcess(sim.url, "--faults", FAULTS, "--hang-seconds", "6", "--seed", "2") as proxy:
        follower = subprocess.Popen(
            pipeline_cmd(data, proxy.url, warehouse, *FOLLOW), stderr=subprocess.PIPE, text=True
        )
        try:
            wait_until(
                lambda: all(_injected(proxy).get(k, 0) >= 1 for k in KINDS), 240, "every fault", interval=0.5
            )
            assert sim.stop() == 0, sim.stderr  # the writers stop; the same data is served again
            with SimulatorProcess(data, "--no-stream", "--serve", "--port", str(port)) as served:
                _control(proxy, calm=True)
                wait_until(
                    lambda: _equal_to_recompute(data, served.url, warehouse), 180, "recompute", interval=0.5
                )
        finally:
            follower.send_signal(signal.SIGTERM)
            _, err = follower.communicate(timeout=60)
        assert follower.returncode == 0, err
    assert "Traceback" not in err
    _assert_logged_once_per_state_change(err)


def _assert_logged_once_per_state_change(err: str) -> None:
    """Between two warnings of the batch API there is a recovery, or the second is a reminder."""
    lines = [line for line in err.splitlines() if "WARNING cohortflow.sources.prefetch" in line]
    assert lines, err
    for before, after in itertools.pairwise(lines):
        if "recovered:" not in before and "recovered:" not in after:
            assert "still " in after or "limit" in before + after, f"logged per attempt:\n{before}\n{after}"


def test_a_batch_no_longer_served_leaves_the_leaderboard_and_comes_back(tmp_path: Path) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    generate(data, "--seed", "8", "--history-batches", "30", "--history-students", "60")
    follow = ("--batches-reconcile-seconds", "0.2", "--batches-gone-after", "2")
    with (
        SimulatorProcess(data, "--no-stream", "--serve") as sim,
        FaultProxyProcess(sim.url, "--faults", "") as proxy,
    ):
        follower = subprocess.Popen(
            pipeline_cmd(data, proxy.url, warehouse, *follow), stderr=subprocess.PIPE, text=True
        )
        try:
            wait_until(lambda: _board(warehouse) == set(range(1, 31)), 60, "all 30 batches", interval=0.2)
            _control(proxy, hide=[7])
            wait_until(lambda: _board(warehouse) == set(range(1, 31)) - {7}, 60, "batch 7 gone", interval=0.2)
            _control(proxy, hide=[])
            wait_until(lambda: _board(warehouse) == set(range(1, 31)), 60, "batch 7 back", interval=0.2)
        finally:
            follower.send_signal(signal.SIGTERM)
            _, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err


def _board(warehouse: str) -> set[int]:
    try:
        with open_warehouse(warehouse) as wh:
            return {int(row["batch_id"]) for row in wh.leaderboard(1000)}
    except CohortflowError:
        return set()


@pytest.fixture
def crowded_second(tmp_path: Path) -> Path:
    """A data dir whose API serves 20 batches, then 150 within one second, then 10 more."""
    data = tmp_path / "data"
    generate(data, "--seed", "3", "--history-batches", "1", "--history-students", "1")
    stamps = [f"2026-01-01 00:00:00.{i:06d}" for i in range(1, 21)]
    stamps += [f"2026-01-01 00:00:01.{i:06d}" for i in range(1, 151)]
    stamps += [f"2026-01-01 00:00:02.{i:06d}" for i in range(1, 11)]
    with sqlite3.connect(data / ".batches.db") as conn:
        conn.execute("DELETE FROM batches")
        conn.executemany(
            "INSERT INTO batches (id, name, created_at) VALUES (?, ?, ?)",
            [(i, f"web-{i}", stamp) for i, stamp in enumerate(stamps, start=1)],
        )
    conn.close()
    return data


def test_more_than_a_page_in_one_second_is_a_reported_limit_not_the_end(crowded_second: Path) -> None:
    data, warehouse = crowded_second, str(crowded_second.parent / "warehouse.db")
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        done = subprocess.run(
            pipeline_cmd(data, sim.url, warehouse, "--once"),
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    assert done.stderr.count("more than 100 batches created within the second 2026-01-01 00:00:01") == 1
    with open_warehouse(warehouse) as wh:
        ids = {int(r[0]) for r in wh.execute("SELECT id FROM batches")}
        health = wh.state()[health_key("batches")]
        students = wh.execute("SELECT count(*) FROM students")[0][0]
    # 20 before, the first 100 of the crowded second, the 10 after: ids 121..170 cannot be served
    assert ids == set(range(1, 121)) | set(range(171, 181))
    assert health["limit"] and "00:00:01" in health["limit"]
    assert students == 1  # the other sources were ingested all the same


@pytest.mark.parametrize("url", ["", "localhost:8000/batches", "ftp://localhost/batches", "http://"])
def test_an_unusable_batches_url_fails_at_once_with_one_line(tmp_path: Path, url: str) -> None:
    command = [*pipeline_cmd(tmp_path, "", str(tmp_path / "warehouse.db"), "--once")]
    command[command.index("--batches-url") + 1] = url
    started = time.monotonic()
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "--batches-url" in done.stderr
    assert time.monotonic() - started < 20  # not 30 s of retries (a cold interpreter start is ~2 s)
    assert not (tmp_path / "warehouse.db").exists()


def test_an_api_that_started_over_is_a_reset_confirmed_by_listings(tmp_path: Path) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    history = ("--history-batches", "20", "--history-students", "30", "--no-stream", "--serve")
    follow = ("--batches-reconcile-seconds", "0.2", "--batches-gone-after", "2")
    first = SimulatorProcess(data, "--seed", "1", "--start-time", "2026-01-01T00:00:00", *history).start()
    follower = subprocess.Popen(
        pipeline_cmd(data, first.url, warehouse, *follow), stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(
            lambda: _board(warehouse) == set(range(1, 21)), 60, "the first API's batches", interval=0.2
        )
        assert first.stop() == 0, first.stderr
        # Another API on the same address: ids 1..20 again, created months later.
        other = ("--seed", "2", "--start-time", "2026-06-01T00:00:00", "--port", str(first.port))
        with SimulatorProcess(tmp_path / "other", *other, *history):
            _, err = follower.communicate(timeout=120)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == 1, err
    assert "was reset: batch 1 is served as created at 2026-06" in err
    assert "consecutive full listings" in err
    assert _board(warehouse) == set(range(1, 21))  # nothing wiped (--on-reset fail)

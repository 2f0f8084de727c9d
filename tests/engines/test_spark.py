"""The Spark engine on a real local[2] session: parity with the embedded engine, and crash recovery."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cohortflow.simulator.process import SimulatorProcess
from cohortflow.warehouse import open_warehouse
from tests.engines.test_embedded import MESSY, assert_matches_recompute, catch_up, pipeline_cmd
from tests.helpers import generate, snapshot

pytestmark = [pytest.mark.spark, pytest.mark.timeout(900)]

HISTORY = ("--history-batches", "140", "--history-students", "700", "--history-test-runs", "25000")


@pytest.fixture(autouse=True)
def _java() -> None:
    if shutil.which("java") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Java 17+ is missing in CI: scripts/ensure-services should have installed it")
        pytest.skip("Java 17+ is not installed (scripts/ensure-services installs it)")


def spark_args(checkpoint: Path, *extra: str) -> tuple[str, ...]:
    return ("--engine", "spark", "--checkpoint", str(checkpoint), *extra)


@pytest.mark.parametrize("spark_warehouse", ["sqlite", "postgres"])
def test_spark_and_embedded_engines_build_identical_tables(
    tmp_path: Path, spark_warehouse: str, request: pytest.FixtureRequest
) -> None:
    data = tmp_path / "data"
    generate(data, "--seed", "21", *HISTORY, *MESSY)
    embedded_wh = str(tmp_path / "embedded.db")
    spark_wh = (
        request.getfixturevalue("pg_url") if spark_warehouse == "postgres" else str(tmp_path / "spark.db")
    )
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        done = catch_up(data, sim.url, embedded_wh)
        assert done.returncode == 0, done.stderr
        done = catch_up(data, sim.url, spark_wh, *spark_args(tmp_path / "checkpoint"))
        assert done.returncode == 0, done.stderr[-3000:]
        with open_warehouse(embedded_wh) as a, open_warehouse(spark_wh) as b:
            embedded, spark = snapshot(a), snapshot(b)
        assert spark == embedded
        assert len(spark["batches"]) == 140, "more than 100 batches: the API was paged"
        assert any(source == "test_runs" for source, _ in spark["quarantine"]), "dirty lines were quarantined"
        assert_matches_recompute(data, sim.url, spark_wh)


def _spark_progress(warehouse: str) -> int:
    """The last micro-batch id the Spark sink committed (-1 when none)."""
    try:
        with open_warehouse(warehouse) as wh:
            state = wh.state()
    except Exception:
        return -1
    return max((v for k, v in state.items() if k.startswith("spark:")), default=-1)


def _wait_for_progress(
    warehouse: str, proc: subprocess.Popen[bytes], at_least: int, timeout: float = 240
) -> None:
    deadline = time.monotonic() + timeout
    while _spark_progress(warehouse) < at_least:
        assert proc.poll() is None, f"the Spark pipeline exited {proc.returncode}"
        assert time.monotonic() < deadline, "the Spark pipeline made no progress"
        time.sleep(0.5)


def test_spark_driver_killed_mid_stream_recovers_from_its_checkpoint(tmp_path: Path) -> None:
    data, warehouse, checkpoint = tmp_path / "data", str(tmp_path / "wh.db"), tmp_path / "checkpoint"
    follow = spark_args(checkpoint, "--trigger-seconds", "0.5", "--txn-bytes", "262144")
    with SimulatorProcess(data, "--seed", "23", "--interval-ms", "10", *HISTORY, *MESSY) as sim:
        command = pipeline_cmd(data, sim.url, warehouse, *follow)
        first = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        _wait_for_progress(warehouse, first, at_least=3)
        os.killpg(first.pid, signal.SIGKILL)  # the driver and its JVM die at once, mid-stream
        first.wait()
        before = _spark_progress(warehouse)
        second = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        _wait_for_progress(warehouse, second, at_least=before + 2)
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err[-3000:]
    with SimulatorProcess(data, "--no-stream", "--serve") as frozen:
        done = catch_up(data, frozen.url, warehouse, *spark_args(checkpoint))
        assert done.returncode == 0, done.stderr[-3000:]
        assert_matches_recompute(data, frozen.url, warehouse)


def test_a_failed_query_is_reported_as_one_clear_error(tmp_path: Path) -> None:
    data, warehouse, checkpoint = tmp_path / "data", str(tmp_path / "wh.db"), tmp_path / "checkpoint"
    generate(
        data,
        "--seed",
        "25",
        "--history-batches",
        "5",
        "--history-students",
        "20",
        "--history-test-runs",
        "2000",
    )
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        assert catch_up(data, sim.url, warehouse, *spark_args(checkpoint)).returncode == 0
        log = data / "test_runs.log"
        os.truncate(log, log.stat().st_size // 2)
        failed = catch_up(data, sim.url, warehouse, *spark_args(checkpoint))
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("cohortflow: ") and "was reset" in last and "--on-reset restart" in last, last

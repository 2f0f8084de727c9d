"""The Spark engine on real JVMs: a standalone cluster (master + 2 workers) and local[2].

Cluster: parity with the embedded engine and the naive model; kill -9 of the
driver mid-stream and recovery from the checkpoint. Local: real signals stop
a follow run cleanly, a failure is one line, and a checkpoint is refused with
a warehouse it does not belong to.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from cohortflow.simulator.process import SimulatorProcess
from cohortflow.warehouse import open_warehouse
from tests.helpers import generate, snapshot
from tests.support.pipeline import MESSY, assert_matches_recompute, catch_up, pipeline_cmd
from tests.support.spark import require_java
from tests.support.wait import wait_until

pytestmark = [pytest.mark.spark, pytest.mark.timeout(900)]

HISTORY = ("--history-batches", "140", "--history-students", "700", "--history-test-runs", "25000")
SMALL = ("--history-batches", "5", "--history-students", "30", "--history-test-runs", "3000")


@pytest.fixture(autouse=True)
def _java() -> None:
    require_java()


def spark_args(checkpoint: Path, *extra: str, master: str = "local[2]") -> tuple[str, ...]:
    return ("--engine", "spark", "--spark-master", master, "--checkpoint", str(checkpoint), *extra)


def _spark_progress(warehouse: str) -> int:
    """The last micro-batch id the Spark sink committed (-1 when none)."""
    try:
        with open_warehouse(warehouse) as wh:
            state = wh.state()
    except Exception:
        return -1
    return max((v for k, v in state.items() if k.startswith("spark:")), default=-1)


def _await_progress(warehouse: str, proc: subprocess.Popen[str], at_least: int) -> None:
    def progressed() -> bool:
        assert proc.poll() is None, f"the Spark pipeline exited {proc.returncode}"
        return _spark_progress(warehouse) >= at_least

    wait_until(progressed, 300, f"the Spark pipeline to commit micro-batch {at_least}", interval=0.5)


def _assert_clean(stderr: str) -> None:
    for noise in ("Traceback", "Aborted!", "py4j", "Exception"):
        assert noise not in stderr, stderr[-3000:]


@pytest.mark.parametrize("spark_warehouse", ["sqlite", "postgres"])
def test_on_a_standalone_cluster_spark_and_embedded_build_identical_tables(
    tmp_path: Path, spark_warehouse: str, spark_cluster: str, request: pytest.FixtureRequest
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
        done = catch_up(data, sim.url, spark_wh, *spark_args(tmp_path / "ck", master=spark_cluster))
        assert done.returncode == 0, done.stderr[-3000:]
        with open_warehouse(embedded_wh) as a, open_warehouse(spark_wh) as b:
            embedded, spark = snapshot(a), snapshot(b)
        assert spark == embedded
        assert len(spark["batches"]) == 140, "more than 100 batches: the API was paged"
        assert any(source == "test_runs" for source, _ in spark["quarantine"]), "dirty lines were quarantined"
        assert_matches_recompute(data, sim.url, spark_wh)


def test_on_a_standalone_cluster_the_driver_killed_mid_stream_recovers_from_its_checkpoint(
    tmp_path: Path, spark_cluster: str
) -> None:
    data, warehouse, checkpoint = tmp_path / "data", str(tmp_path / "wh.db"), tmp_path / "checkpoint"
    follow = spark_args(checkpoint, "--trigger-seconds", "0.5", "--txn-bytes", "262144", master=spark_cluster)
    with SimulatorProcess(data, "--seed", "23", "--interval-ms", "10", *HISTORY, *MESSY) as sim:
        command = pipeline_cmd(data, sim.url, warehouse, *follow)
        first = subprocess.Popen(command, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        _await_progress(warehouse, first, at_least=3)
        os.killpg(first.pid, signal.SIGKILL)  # the driver and its JVM die at once, mid-stream
        first.wait()
        before = _spark_progress(warehouse)
        second = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
        _await_progress(warehouse, second, at_least=before + 2)
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=180)
        assert second.returncode == 0, err[-3000:]
        _assert_clean(err)
    with SimulatorProcess(data, "--no-stream", "--serve") as frozen:
        done = catch_up(data, frozen.url, warehouse, *spark_args(checkpoint, master=spark_cluster))
        assert done.returncode == 0, done.stderr[-3000:]
        assert_matches_recompute(data, frozen.url, warehouse)


def test_ctrl_c_in_follow_mode_stops_after_a_whole_micro_batch_with_exit_0(tmp_path: Path) -> None:
    data, warehouse, checkpoint = tmp_path / "data", str(tmp_path / "wh.db"), tmp_path / "checkpoint"
    follow = spark_args(checkpoint, "--trigger-seconds", "0.5", "--txn-bytes", "65536")
    with SimulatorProcess(data, "--seed", "27", "--interval-ms", "10", *SMALL) as sim:
        proc = subprocess.Popen(
            pipeline_cmd(data, sim.url, warehouse, *follow),
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        _await_progress(warehouse, proc, at_least=1)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    _assert_clean(err)
    committed = max(int(p.name) for p in (checkpoint / "commits").iterdir() if p.name.isdigit())
    assert _spark_progress(warehouse) == committed, "the warehouse and the checkpoint agree on the last batch"


def test_a_reset_is_one_clear_line_and_restart_rebuilds(tmp_path: Path) -> None:
    data, warehouse, checkpoint = tmp_path / "data", str(tmp_path / "wh.db"), tmp_path / "checkpoint"
    generate(data, "--seed", "25", *SMALL)
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        assert catch_up(data, sim.url, warehouse, *spark_args(checkpoint)).returncode == 0
        log = data / "test_runs.log"
        os.truncate(log, log.stat().st_size // 2)
        failed = catch_up(data, sim.url, warehouse, *spark_args(checkpoint))
        assert failed.returncode == 1
        _assert_clean(failed.stderr)
        last = failed.stderr.strip().splitlines()[-1]
        assert last.startswith("cohortflow: `") and "test_runs.log` was reset: it shrank" in last, last
        assert last.endswith("`cohortflow run --on-reset restart`"), last
        rebuilt = catch_up(data, sim.url, warehouse, *spark_args(checkpoint, "--on-reset", "restart"))
        assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
        assert_matches_recompute(data, sim.url, warehouse)


def test_a_checkpoint_is_refused_with_a_warehouse_it_does_not_belong_to(tmp_path: Path) -> None:
    full, data = tmp_path / "full", tmp_path / "data"
    generate(full, "--seed", "29", *SMALL, *MESSY)
    lines = (full / "test_runs.log").read_bytes().splitlines(keepends=True)
    data.mkdir()
    shutil.copy(full / "students.db", data / "students.db")
    log, thirds = data / "test_runs.log", len(lines) // 3
    log.write_bytes(b"".join(lines[:thirds]))
    warehouse, old_ck, new_ck = str(tmp_path / "wh.db"), tmp_path / "ck", tmp_path / "ck2"
    with SimulatorProcess(full, "--no-stream", "--serve") as sim:
        assert catch_up(data, sim.url, warehouse, *spark_args(old_ck)).returncode == 0
        log.write_bytes(b"".join(lines[: 2 * thirds]))
        assert catch_up(data, sim.url, warehouse).returncode == 0  # the embedded engine takes over

        refused = catch_up(data, sim.url, warehouse, *spark_args(old_ck))
        assert refused.returncode == 1
        last = refused.stderr.strip().splitlines()[-1]
        assert "written by the embedded engine since" in last and "--checkpoint" in last, last

        log.write_bytes(b"".join(lines))  # a fresh checkpoint resumes from the warehouse's cursors
        done = catch_up(data, sim.url, warehouse, *spark_args(new_ck))
        assert done.returncode == 0, done.stderr[-3000:]
        assert_matches_recompute(data, sim.url, warehouse)

        other = catch_up(data, sim.url, str(tmp_path / "other.db"), *spark_args(new_ck))
        assert other.returncode == 1
        assert "belongs to another warehouse" in other.stderr.strip().splitlines()[-1], other.stderr

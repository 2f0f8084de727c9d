"""students.db after its writer died mid-transaction: recovered like any SQLite reader would, or blocked."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cohortflow.simulator.process import SimulatorProcess
from tests.helpers import generate
from tests.support import unavailable
from tests.support.pipeline import assert_matches_recompute, catch_up, pipeline_cmd

SMALL = ("--history-batches", "20", "--history-students", "3000", "--history-test-runs", "4000")
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")


def crash_the_writer(data: Path) -> None:
    """`generate --crash-writer`: the students writer dies by SIGKILL inside a transaction."""
    command = [sys.executable, "-m", "cohortflow", "generate", "--data-dir", str(data)]
    done = subprocess.run([*command, "--no-stream", "--crash-writer"], check=False, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr


def assert_hot_journal(db: Path) -> None:
    """A journal with a valid header beside a database that SQLite itself calls mid-rollback."""
    journal = Path(f"{db}-journal")
    assert journal.exists() and journal.stat().st_size > 512
    assert journal.read_bytes()[:8] == JOURNAL_MAGIC
    read_only = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        with pytest.raises(sqlite3.OperationalError) as seen:
            read_only.execute("SELECT count(*) FROM students").fetchone()
    finally:
        read_only.close()
    assert seen.value.sqlite_errorcode == 776  # SQLITE_READONLY_ROLLBACK: "hot journal, cannot roll back"


def test_a_hot_journal_left_by_a_killed_writer_is_rolled_back_and_ingested(tmp_path: Path) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    generate(data, "--seed", "21", *SMALL)
    crash_the_writer(data)
    db = data / "students.db"
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        assert_hot_journal(db)  # still hot with the API up: nobody but the pipeline touched it
        done = catch_up(data, sim.url, warehouse)
        assert done.returncode == 0, done.stderr
        assert not Path(f"{db}-journal").exists(), "the pipeline's reader rolled the journal back"
        assert_matches_recompute(data, sim.url, warehouse)
    with sqlite3.connect(db) as conn:
        query = "SELECT count(*) FROM students WHERE name LIKE '%never committed%'"
        (uncommitted,) = conn.execute(query).fetchone()
    conn.close()
    assert uncommitted == 0


@pytest.mark.parametrize("shm", ["kept", "deleted"])
def test_a_writer_killed_mid_transaction_in_wal_mode_is_read(tmp_path: Path, shm: str) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    generate(data, "--seed", "22", *SMALL)
    db = data / "students.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    conn.close()
    crash_the_writer(data)
    assert Path(f"{db}-wal").stat().st_size > 0, "the dead writer's frames are in the WAL"
    if shm == "deleted":
        Path(f"{db}-shm").unlink()
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        done = catch_up(data, sim.url, warehouse)
        assert done.returncode == 0, done.stderr
        assert_matches_recompute(data, sim.url, warehouse)


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """``(data, view)``: a data directory and a read-only bind mount of it (read-only media)."""
    data, view = tmp_path / "data", tmp_path / "read-only"
    data.mkdir()
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(data), str(view)], check=False, capture_output=True)
    if mounted.returncode != 0:
        unavailable(f"cannot bind-mount (needs root): {mounted.stderr.decode().strip()}")
    try:
        remount = ["mount", "-o", "remount,bind,ro", str(view)]
        subprocess.run(remount, check=True, capture_output=True)
        yield data, view
    finally:
        subprocess.run(["umount", str(view)], check=True, capture_output=True)


def test_a_hot_journal_on_read_only_media_is_blocked_and_retried_slowly(
    read_only_view: tuple[Path, Path], tmp_path: Path
) -> None:
    data, view = read_only_view
    generate(data, "--seed", "23", *SMALL)
    crash_the_writer(data)
    command = pipeline_cmd(view, "http://127.0.0.1:9", str(tmp_path / "warehouse.db"))
    follower = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    time.sleep(8)  # blocked all along: each failure is retried with backoff, never in a loop
    cpu = _cpu_seconds(follower.pid)
    follower.send_signal(signal.SIGTERM)
    _, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    blocked = [line for line in err.splitlines() if "students.db" in line and "hot journal" in line]
    assert blocked, err
    assert len(blocked) <= 3, "a blocked source is warned about once per change, not per attempt"
    assert cpu < 0.5 * (time.monotonic() - started), f"{cpu:.1f} s of CPU: a tight retry loop"
    assert_hot_journal(data / "students.db")  # untouched: we could not roll it back


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _students_in(warehouse: str) -> int:
    with sqlite3.connect(warehouse) as conn:
        ready = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'students'").fetchone()[0]
        count = conn.execute("SELECT count(*) FROM students").fetchone()[0] if ready else 0
    conn.close()
    return int(count)


def test_a_following_pipeline_survives_the_writer_dying_under_it(tmp_path: Path) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "warehouse.db")
    generate(data, "--seed", "24", *SMALL)
    journal = Path(f"{data / 'students.db'}-journal")
    follower = subprocess.Popen(
        pipeline_cmd(data, "http://127.0.0.1:9", warehouse), stderr=subprocess.PIPE, text=True
    )  # no batch API for now: the generator's lock is needed for the crash
    try:
        crash_the_writer(data)  # while the follower polls students.db
        deadline = time.monotonic() + 90
        while journal.exists() or _students_in(warehouse) < 3000:
            assert time.monotonic() < deadline, "the follower never rolled the journal back"
            assert follower.poll() is None, "the follower must outlive the writer's crash"
            time.sleep(0.2)
    finally:
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        done = catch_up(data, sim.url, warehouse)
        assert done.returncode == 0, done.stderr
        assert_matches_recompute(data, sim.url, warehouse)

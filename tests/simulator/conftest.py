"""Fixtures for the simulator's tests: real generator processes, real HTTP, real SQLite."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cohortflow.simulator.process import SimulatorProcess
from cohortflow.simulator.runner import GenerateOptions, Generator, Summary

DATA = Path(__file__).parent / "data"
STOPPED = re.compile(
    r"cohortflow-simulator stopped intervals=(\d+) batches=(\d+) students=(\d+) "
    r"test_runs=(\d+) student_lock_retries=(\d+)"
)


def rows(db: Path, query: str) -> list[tuple[Any, ...]]:
    """Run one read query on a fresh connection and close it (no lingering locks)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def students(data_dir: Path) -> list[tuple[int, str, int, str]]:
    return rows(data_dir / "students.db", "SELECT id, name, batch_id, created_at FROM students")


def hidden_batches(data_dir: Path) -> list[tuple[int, str, str]]:
    return rows(data_dir / ".batches.db", "SELECT id, name, created_at FROM batches ORDER BY id")


def get(url: str, **params: str) -> httpx.Response:
    return httpx.get(url, params=params, timeout=10)


def stopped_counts(stderr: str) -> dict[str, int]:
    match = STOPPED.search(stderr)
    assert match, stderr
    keys = ("intervals", "batches", "students", "test_runs", "student_lock_retries")
    return dict(zip(keys, map(int, match.groups()), strict=True))


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def write_history(data_dir: Path, **options: Any) -> Summary:
    """Write a history in-process (no stream, no server): fast, for library-level checks."""
    settings = GenerateOptions(data_dir=data_dir, stream=False, **options)
    err = io.StringIO()
    return Generator(settings, out=io.StringIO(), err=err).run(threading.Event())


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Callable[..., SimulatorProcess]]:
    """Start generator processes; any still running at the end are stopped and must exit 0."""
    started: list[SimulatorProcess] = []

    def start(*args: str, data_dir: Path | None = None) -> SimulatorProcess:
        process = SimulatorProcess(data_dir or tmp_path / "data", *args).start()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.running:
            code = process.stop()
            assert code == 0, process.stderr


def ready_info(data_dir: Path) -> dict[str, Any]:
    content = json.loads((data_dir / ".simulator.json").read_text(encoding="utf-8"))
    assert isinstance(content, dict)
    return content

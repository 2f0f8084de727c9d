"""The README's main job: simulator + pipeline + live leaderboard, stopped with Ctrl-C."""

from __future__ import annotations

import errno
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from cohortflow.demo import DEFAULT_PORT
from cohortflow.errors import WarehouseError
from cohortflow.warehouse import open_warehouse
from tests.dashboard.support import free_port
from tests.support.wait import wait_until


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def port_taken(port: int) -> Iterator[None]:
    """Hold ``port`` on 127.0.0.1 while the block runs (it may already be held by someone else)."""
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", port))
        holder.listen()
    except OSError as exc:
        assert exc.errno == errno.EADDRINUSE, exc  # already taken: just as good for the test
    try:
        yield
    finally:
        holder.close()


def batches_with_a_3plus_student(warehouse: str) -> int:
    with open_warehouse(warehouse) as wh:
        return int(wh.execute("SELECT count(*) FROM batches WHERE students_completed_3plus > 0")[0][0])


@pytest.mark.timeout(240)
def test_demo_with_port_8000_taken_picks_a_free_port_and_shows_students_with_3_lessons(
    tmp_path: Path,
) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "data" / "warehouse.db")
    command = [sys.executable, "-m", "cohortflow", "demo", "--data-dir", str(data), "--warehouse", warehouse]
    board = f"http://127.0.0.1:{free_port()}"
    command += ["--dashboard-port", board.rsplit(":", 1)[1]]
    with port_taken(DEFAULT_PORT):
        demo = subprocess.Popen(
            [*command, "--interval-ms", "20", "--seed", "1"],  # no --port: the default, which is taken
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:

            def ingested_3plus() -> int:
                assert demo.poll() is None, demo.communicate()[0]
                return batches_with_a_3plus_student(warehouse)

            wait_until(ingested_3plus, 150, "a batch with a 3+ student in the warehouse", (WarehouseError,))
            wait_until(lambda: _answers(f"{board}/healthz"), 60, "the demo's web dashboard")
        finally:
            demo.send_signal(signal.SIGINT)  # what Ctrl-C does
            output, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, output
    assert f"port {DEFAULT_PORT} is in use" in output
    assert "batch API on http://127.0.0.1:" in output
    assert f"batch API on http://127.0.0.1:{DEFAULT_PORT};" not in output
    assert "Batches by students with 3+ lessons" in output
    assert "stopping" in output
    assert f"dashboard: {board}/" in output
    assert "Traceback" not in output

"""The README's main job: simulator + pipeline + live leaderboard, stopped with Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cohortflow.warehouse import open_warehouse
from tests.dashboard.support import free_port, wait_until


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.timeout(180)
def test_demo_runs_shows_the_leaderboard_and_stops_cleanly(tmp_path: Path) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "data" / "warehouse.db")
    command = [sys.executable, "-m", "cohortflow", "demo", "--data-dir", str(data), "--warehouse", warehouse]
    board = f"http://127.0.0.1:{free_port()}"
    command += ["--dashboard-port", board.rsplit(":", 1)[1]]
    demo = subprocess.Popen(
        [*command, "--port", "0", "--interval-ms", "20", "--seed", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if Path(warehouse).exists():
            with open_warehouse(warehouse) as wh:
                if wh.execute("SELECT count(*) FROM batches WHERE students_completed_3plus > 0")[0][0]:
                    break
        assert demo.poll() is None, demo.communicate()[0]
        time.sleep(0.5)
    wait_until(lambda: _answers(f"{board}/healthz"), 60, "the demo's web dashboard")
    demo.send_signal(signal.SIGINT)  # what Ctrl-C does
    output, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, output
    assert "Batches by students with 3+ lessons" in output
    assert "stopping" in output
    assert f"dashboard: {board}/" in output
    assert "Traceback" not in output

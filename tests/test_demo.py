"""The README's main job: simulator + pipeline + live leaderboard, stopped with Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cohortflow.warehouse import open_warehouse


@pytest.mark.timeout(180)
def test_demo_runs_shows_the_leaderboard_and_stops_cleanly(tmp_path: Path) -> None:
    data, warehouse = tmp_path / "data", str(tmp_path / "data" / "warehouse.db")
    command = [sys.executable, "-m", "cohortflow", "demo", "--data-dir", str(data), "--warehouse", warehouse]
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
    demo.send_signal(signal.SIGINT)  # what Ctrl-C does
    output, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, output
    assert "Batches by students with 3+ lessons" in output
    assert "stopping" in output
    assert "Traceback" not in output

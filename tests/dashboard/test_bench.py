"""bench/dashboard.py must not rot: run it at a tiny size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dashboard_bench_runs_small(tmp_path: Path) -> None:
    sizes = ("--batches", "20", "--students", "200", "--lines", "2000")
    command = [sys.executable, str(ROOT / "bench" / "dashboard.py"), *sizes, "--requests", "3"]
    command += ["--idle-seconds", "1", "--out", str(tmp_path)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT / "bench"
    )
    assert done.returncode == 0, done.stderr
    assert "api leaderboard" in done.stdout and "idle CPU of the server" in done.stdout

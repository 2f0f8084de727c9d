"""Running `cohortflow run` as a real process, and checking its warehouse against the naive model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cohortflow.warehouse import open_warehouse
from tests.helpers import expected, snapshot
from tests.naive import recompute

MESSY = ("--dirty-rate", "0.02", "--unknown-student-rate", "0.05")


def pipeline_cmd(data: Path, url: str, warehouse: str, *extra: str) -> list[str]:
    """The `cohortflow run` command line over the simulator's sources in ``data``."""
    return [
        *(sys.executable, "-m", "cohortflow", "run", "--quiet"),
        *("--students-db", str(data / "students.db"), "--test-runs-log", str(data / "test_runs.log")),
        *("--batches-url", f"{url}/batches", "--warehouse", warehouse),
        *extra,
    ]


def catch_up(data: Path, url: str, warehouse: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run `cohortflow run --once` to the end of the sources."""
    return subprocess.run(
        pipeline_cmd(data, url, warehouse, "--once", *extra),
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_matches_recompute(data: Path, url: str, warehouse: str) -> None:
    """The warehouse equals the naive model's from-scratch recompute of the sources."""
    model = recompute(data, f"{url}/batches")
    with open_warehouse(warehouse) as wh:
        got = snapshot(wh)
    want = expected(model)
    assert len(want["batches"]) > 0 and len(want["students"]) > 0
    assert got["batches"] == want["batches"]
    assert got["students"] == want["students"]
    assert got["lessons"] == want["lessons"]
    got_runs = {reason: n for (source, reason), n in got["quarantine"].items() if source == "test_runs"}
    assert got_runs == model.rejects
